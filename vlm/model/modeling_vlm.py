"""The VLM: CLIP vision tower -> projector -> image features ADDED onto the `<image>` token embeddings -> causal LM.

Class layout follows transformers' LLaVA: `VLMModel` is the backbone and owns the fusion, so everything that calls
the backbone directly (TRL's chunked SFT loss, TRL's PPO value/reward path through `base_model_prefix`) sees the
image. `VLMForCausalLM` adds the LM head, `VLMForSequenceClassification` a scalar score head, and
`VLMForAnswerLikelihood` (a reward model) scores an answer through the LM head.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, CLIPVisionModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from vlm.model.configuration_vlm import VLMConfig
from vlm.model.projector import VLMProjector

# Inputs that describe the image: used at prefill only; decoding steps reuse the KV cache.
IMAGE_INPUTS = ("pixel_values", "vision_features")


class VLMPreTrainedModel(PreTrainedModel):
    config_class = VLMConfig
    config: VLMConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPEncoderLayer", "GPT2Block"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from vlm.model.weight_files import check_weight_files

        # A cut or corrupt weights file: one error naming it, not safetensors' traceback that names none.
        check_weight_files(pretrained_model_name_or_path)
        # Loading replaces the parameters (and their requires_grad), so the freeze flags are applied afterwards.
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model.apply_freezing()
        return model

    def apply_freezing(self) -> None:
        """Set `requires_grad` from the config's freeze_* flags (LoRA, when used, is applied on top of this)."""
        backbone = self.model if hasattr(self, "model") else self
        backbone.vision_tower.requires_grad_(not self.config.freeze_vision)
        backbone.projector.requires_grad_(not self.config.freeze_projector)
        backbone.language_model.requires_grad_(not self.config.freeze_language_model)


class VLMModel(VLMPreTrainedModel):
    def __init__(self, config: VLMConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.projector = VLMProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pre-projector CLIP features: [num_images, num_image_tokens, D_vision].

        Frozen towers make these cacheable once per image; each model then applies its own projector.
        """
        dtype = self.vision_tower.get_input_embeddings().weight.dtype
        return self.vision_tower(pixel_values=pixel_values.to(dtype)).last_hidden_state

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features, ready to add onto the embeddings: [num_images, num_image_tokens, D_text]."""
        return self.projector(self.get_vision_features(pixel_values))

    def image_token_mask(self, input_ids: torch.LongTensor, num_images: int) -> torch.BoolTensor:
        """Positions that receive image features: [B, T].

        Normally every `<image>` token (the processor wrote exactly N per image). A sequence that continues after
        its prompt (a sampled response re-scored in RL) may contain extra `<image>` tokens: with one image per row,
        only the first N of each row are image positions.
        """
        mask = input_ids == self.config.image_token_id
        n = self.config.num_image_tokens
        total = int(mask.sum())
        if total == num_images * n:
            return mask
        if num_images == input_ids.shape[0] and bool((mask.sum(-1) >= n).all()):
            return mask & (mask.cumsum(-1) <= n)
        raise ValueError(
            f"Image features and image tokens do not match: {total} `<image>` tokens in input_ids, but "
            f"{num_images} image(s) x {n} tokens = {num_images * n}. Build inputs with VLMProcessor, which "
            f"expands each `<image>` to {n} tokens."
        )

    def add_image_features(
        self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """ADD projected image features onto the token embeddings at the `<image>` positions (not concatenation:
        the sequence length is unchanged, and zero features leave the embeddings untouched)."""
        mask = self.image_token_mask(input_ids, image_features.shape[0]).unsqueeze(-1)  # [B, T, 1]
        features = image_features.to(inputs_embeds.dtype).reshape(-1, inputs_embeds.shape[-1])
        return inputs_embeds + torch.zeros_like(inputs_embeds).masked_scatter(mask, features)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if pixel_values is not None and vision_features is not None:
            raise ValueError("Pass either pixel_values or precomputed vision_features, not both")
        if pixel_values is not None and pixel_values.dim() == 3:
            # Cached features `[B, N, D]` where pixels `[B, C, H, W]` go: TRL's GRPOTrainer carries every image
            # from the processor to each forward under `pixel_values` (grpo/trainer.py).
            pixel_values, vision_features = None, pixel_values
        has_image = pixel_values is not None or vision_features is not None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # [B, T, D_text]
            if has_image:
                if vision_features is None:
                    vision_features = self.get_vision_features(pixel_values)
                image_features = self.projector(vision_features.to(self.projector.out.weight.dtype))
                inputs_embeds = self.add_image_features(input_ids, inputs_embeds, image_features)
        elif has_image:
            raise ValueError("Images need input_ids to locate the `<image>` tokens; got inputs_embeds")

        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Left padding: positions count real tokens only (as TRL's PPO does), so a padded row sees the
            # same positions as the row alone. With a cache, keep the positions of the new tokens.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]

        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )


def _tied_embedding_key(model: nn.Module, embedding: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is embedding:
            return f"{name}.weight"
    raise ValueError("input embedding not found in the language model")  # pragma: no cover


class VLMForCausalLM(VLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: VLMConfig):
        super().__init__(config)
        self.model = VLMModel(config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        # GPT-2 calls its embedding `wte`, other LMs `embed_tokens`: find it instead of hard-coding one name.
        embed_key = _tied_embedding_key(self, self.model.get_input_embeddings())
        self._tied_weights_keys = {"lm_head.weight": embed_key}
        self.post_init()
        self.apply_freezing()

    # transformers' Trainer, resuming, re-ties the weights a checkpoint leaves out, instead of warning "There were
    # missing keys in the checkpoint model loaded: ['lm_head.weight']", only when the missing keys equal
    # `_keys_to_ignore_on_save` (`Trainer._issue_warnings_after_load`, transformers 5.24); it does not read
    # `_tied_weights_keys`. So the tied copies are declared here as well: those in `all_tied_weights_keys`, which
    # transformers keeps to the weights really tied (empty when the config unties them; a checkpoint holding
    # different values drops its entry), so an untied `lm_head` is still saved and a real gap is still reported.
    @property
    def _keys_to_ignore_on_save(self) -> set[str]:
        tied = getattr(self, "all_tied_weights_keys", None) or {}
        return getattr(self, "_ignore_on_save", set()) | set(tied)

    @_keys_to_ignore_on_save.setter
    def _keys_to_ignore_on_save(self, keys) -> None:  # `post_init` sets the class's own (none) and its children's
        self._ignore_on_save = set(keys or [])

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_vision_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`labels` are unshifted token ids with -100 where no loss is wanted; the loss function shifts them."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            vision_features=vision_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # [B, T, D_text]
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])  # [B, T_kept, V]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        # Image inputs go to the prefill step only: the vision tower runs once per image, never per decoded token.
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in IMAGE_INPUTS:
                model_inputs.pop(key, None)
        return model_inputs


class VLMForSequenceClassification(VLMPreTrainedModel):
    """Backbone + a linear score head read at the last non-pad token: the reward model and the PPO value model.

    TRL's PPO reads `getattr(model, model.base_model_prefix)` and `model.score`, so the head is named `score`.
    """

    def __init__(self, config: VLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = VLMModel(config)
        self.score = nn.Linear(config.text_config.hidden_size, self.num_labels, bias=False)
        self.post_init()
        self.apply_freezing()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """From a causal-LM checkpoint (the SFT policy) the new head is scalar (`num_labels=1`) unless a number of
        labels is asked for; a saved classifier keeps its own."""
        if "num_labels" not in kwargs:
            config = kwargs.get("config")
            if not isinstance(config, VLMConfig):  # a path or None: read the checkpoint's
                config = VLMConfig.from_pretrained(config or pretrained_model_name_or_path)
            default_labels = config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
            if cls.__name__ not in (config.architectures or []) and default_labels:
                config.num_labels = 1
                kwargs["config"] = config
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        answer_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """`answer_mask` is not read (the score is taken at the last token); it is accepted so that both reward
        models take the inputs `vlm.model.reward_scoring.reward_inputs` builds."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            vision_features=vision_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.score(outputs.last_hidden_state)  # [B, T, num_labels]
        batch = logits.shape[0]
        if attention_mask is not None:
            # Rightmost attended token: works for left and right padding alike.
            positions = torch.arange(attention_mask.shape[-1], device=logits.device)
            last = (positions * attention_mask.to(logits.device).long()).argmax(-1)
        elif input_ids is not None and self.config.text_config.pad_token_id is not None:
            positions = torch.arange(input_ids.shape[-1], device=logits.device)
            last = (positions * (input_ids != self.config.text_config.pad_token_id).long()).argmax(-1)
        else:
            last = torch.full((batch,), logits.shape[1] - 1, device=logits.device)
        pooled = logits[torch.arange(batch, device=logits.device), last]  # [B, num_labels]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class VLMForAnswerLikelihood(VLMForCausalLM):
    """A reward model that reads the answer through the LM head: its one logit is
    `a * log p(answer tokens, EOS | image, question) + b`, the log-likelihood of the answer summed over the tokens
    `answer_mask` marks (each predicted from the token before it), scaled and shifted by the two weights of
    `likelihood_head` (`Linear(1, 1)`).

    Why not a head on the EOS state: in an SFT policy that state hardly depends on which answer was given (SFT never
    trained an output there), so a head on it learns how hard the question is, not whether the answer is right; the
    LM head already ranks answers by what the policy sees (docs/results.md, "Stage 3"). Trained on correct/incorrect
    labels, the whole model learns to give incorrect answers a low likelihood.
    """

    def __init__(self, config: VLMConfig):
        config.num_labels = 1
        super().__init__(config)
        self.likelihood_head = nn.Linear(1, 1)
        self.post_init()
        self.apply_freezing()

    def _init_weights(self, module: nn.Module) -> None:
        # A new head (from a policy checkpoint) starts as the identity: the logit is the log-likelihood itself,
        # until `reward/train.py` fits it (Platt scaling).
        if module is getattr(self, "likelihood_head", None):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def answer_log_likelihood(self, hidden_states: torch.Tensor, input_ids: torch.Tensor, answer_mask) -> torch.Tensor:
        """Sum of log p(token) over the tokens `answer_mask` marks, [B] float32; the LM head runs only on the
        positions that predict them."""
        predicts = answer_mask[:, 1:].bool()  # position t predicts token t + 1
        logits = self.lm_head(hidden_states[:, :-1][predicts]).float()
        token_log_probs = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:][predicts][:, None])[:, 0]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(predicts)[predicts]
        return torch.zeros(input_ids.shape[0], device=logits.device).index_add(0, rows, token_log_probs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        answer_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        if input_ids is None or answer_mask is None:
            raise ValueError("VLMForAnswerLikelihood needs input_ids and answer_mask (the answer's tokens and EOS)")
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            vision_features=vision_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kwargs,
        )
        log_likelihood = self.answer_log_likelihood(outputs.last_hidden_state, input_ids, answer_mask)
        head = self.likelihood_head
        logits = log_likelihood[:, None] * head.weight.float() + head.bias.float()  # [B, 1]
        return SequenceClassifierOutputWithPast(logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "VLMModel",
    "VLMForCausalLM",
    "VLMForSequenceClassification",
    "VLMForAnswerLikelihood",
    "VLMPreTrainedModel",
]
