"""Assemble a fresh VLM from a CLIP checkpoint and a causal-LM checkpoint, and save it in HF format."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel, PreTrainedModel

from vlm.chat_template import VICUNA_V1_TEMPLATE
from vlm.configuration_vlm import VLMConfig
from vlm.modeling_vlm import VLMForCausalLM
from vlm.processing_vlm import IMAGE_TOKEN, VLMProcessor

logger = logging.getLogger(__name__)
PAD_TOKEN = "<pad>"


def load_vision_tower(name_or_path: str) -> CLIPVisionModel:
    """A CLIP vision tower from a full `CLIPModel` checkpoint (openai/clip-vit-base-patch32) or a vision-only one."""
    return CLIPVisionModel.from_pretrained(name_or_path)


def load_language_model(name_or_path: str) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(name_or_path)


def prepare_tokenizer(tokenizer):
    """Add `<image>` and, if missing, a pad token distinct from EOS (PPO masks by `ids != pad`)."""
    added = {"extra_special_tokens": [IMAGE_TOKEN]}
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        added["pad_token"] = PAD_TOKEN
    tokenizer.add_special_tokens(added, replace_extra_special_tokens=False)
    tokenizer.padding_side = "left"  # generation and PPO rollouts need left padding; collators pad themselves
    return tokenizer


def build_vlm(
    vision_tower: CLIPVisionModel,
    language_model: PreTrainedModel,
    tokenizer,
    image_processor,
    **config_kwargs,
) -> tuple[VLMForCausalLM, VLMProcessor]:
    """Wire a pretrained vision tower and LM into a `VLMForCausalLM`, with a freshly initialised projector.

    `config_kwargs` go to `VLMConfig` (projector_num_heads, freeze_vision, ...).
    """
    tokenizer = prepare_tokenizer(tokenizer)
    config = VLMConfig(
        vision_config=vision_tower.config.to_dict(),
        text_config=language_model.config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        **config_kwargs,
    )
    model = VLMForCausalLM(config)
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    model.model.language_model.load_state_dict(language_model.base_model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(language_model.get_output_embeddings().state_dict())
    # New rows (`<image>`, `<pad>`) start at the mean embedding: a neutral token the image features are added to.
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.text_config.vocab_size = len(tokenizer)
    for cfg in (model.config, model.config.text_config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.bos_token_id = tokenizer.bos_token_id
    processor = VLMProcessor(
        image_processor, tokenizer, num_image_tokens=config.num_image_tokens, chat_template=VICUNA_V1_TEMPLATE
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built VLM: %.1fM parameters, %d image tokens", n_params / 1e6, config.num_image_tokens)
    return model, processor


def build_vlm_from_pretrained(
    vision: str, language_model: str, tokenizer: str | None = None, **config_kwargs
) -> tuple[VLMForCausalLM, VLMProcessor]:
    """Build from checkpoint names or paths, e.g. `openai/clip-vit-base-patch32` + `gpt2-large`."""
    return build_vlm(
        load_vision_tower(vision),
        load_language_model(language_model),
        AutoTokenizer.from_pretrained(tokenizer or language_model),
        AutoImageProcessor.from_pretrained(vision),
        **config_kwargs,
    )


def save_vlm(model: PreTrainedModel, processor: VLMProcessor, out_dir: str | Path) -> Path:
    """Save model (safetensors) and processor; written to a temporary sibling and renamed, so `out_dir` is
    either the complete checkpoint or absent."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def is_vlm_checkpoint(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == VLMConfig.model_type
    except (OSError, ValueError):
        return False


def load_vlm(path: str | Path, dtype: torch.dtype | None = None) -> tuple[VLMForCausalLM, VLMProcessor]:
    """Load a saved VLM and its processor; a clear error when `path` is not one."""
    if not is_vlm_checkpoint(path):
        raise ValueError(f"{path} is not a vlm-rlhf checkpoint (no config.json with model_type 'vlm_rlhf')")
    from transformers import AutoProcessor

    model = VLMForCausalLM.from_pretrained(path, dtype=dtype)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor
