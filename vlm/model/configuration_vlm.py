"""`VLMConfig`: a CLIP vision config, a causal-LM text config, and how the two are fused."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


@strict
class VLMConfig(PreTrainedConfig):
    r"""
    Configuration of [`VLMForCausalLM`] / [`VLMForSequenceClassification`].

    Args:
        vision_config (`dict` or `CLIPVisionConfig`): the vision tower (default: CLIP ViT-B/32 shape).
        text_config (`dict` or `PreTrainedConfig`): the language model (default: GPT-2 small shape).
        image_token_id (`int`): id of `<image>` in the tokenizer; set by the builder after adding the token.
        num_image_tokens (`int`, *optional*): `<image>` copies per image. Defaults to the vision tower's output
            length, (image_size / patch_size)^2 + 1 (patches + CLS); any other value is an error.
        projector_num_heads (`int`, defaults to 8): attention heads of the projector's encoder layer.
        projector_intermediate_size (`int`, *optional*): its feed-forward width (default 4x vision width).
        projector_dropout (`float`, defaults to 0.0).
        freeze_vision / freeze_projector / freeze_language_model (`bool`): which parts get no gradient. Vision is
            frozen by default (LLaVA's recipe); stages override these from their configs.
    """

    model_type = "vlm_rlhf"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int | None = None
    num_image_tokens: int | None = None
    projector_num_heads: int = 8
    projector_intermediate_size: int | None = None
    projector_dropout: float = 0.0
    freeze_vision: bool = True
    freeze_projector: bool = False
    freeze_language_model: bool = False
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        v = self.vision_config
        expected = (v.image_size // v.patch_size) ** 2 + 1  # patches + CLS: CLIP's last_hidden_state length
        if self.num_image_tokens is None:
            self.num_image_tokens = expected
        elif self.num_image_tokens != expected:
            raise ValueError(
                f"num_image_tokens={self.num_image_tokens} but the vision tower outputs {expected} tokens "
                f"(image_size {v.image_size}, patch_size {v.patch_size}); leave num_image_tokens unset."
            )
        if v.hidden_size % self.projector_num_heads:
            raise ValueError(
                f"projector_num_heads={self.projector_num_heads} must divide the vision width {v.hidden_size}"
            )
        if self.projector_intermediate_size is None:
            self.projector_intermediate_size = 4 * v.hidden_size
        self.tie_word_embeddings = getattr(self.text_config, "tie_word_embeddings", True)


__all__ = ["VLMConfig"]
