"""Assemble a fresh VLM from a CLIP checkpoint and a causal-LM checkpoint, and save it in HF format."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel, PreTrainedModel

from vlm.model.chat_template import VICUNA_V1_TEMPLATE
from vlm.model.configuration_vlm import VLMConfig
from vlm.model.modeling_vlm import VLMForCausalLM
from vlm.model.processing_vlm import IMAGE_TOKEN, VLMProcessor

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


def _saved_config(path: str | Path) -> dict | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError):
        return None


def is_vlm_checkpoint(path: str | Path) -> bool:
    config = _saved_config(path)
    return config is not None and config.get("model_type") == VLMConfig.model_type


# The classes a checkpoint may have been saved from for each role, and where such a checkpoint comes from.
ROLES = {
    "policy": ("VLMForCausalLM",),
    "reward model": ("VLMForAnswerLikelihood", "VLMForSequenceClassification"),
}
_SOURCES = {
    "policy": "a policy checkpoint (init-model, sft, ppo, grpo or instruct output)",
    "reward model": "a reward model (`vlm-rlhf reward train` output)",
}


def saved_architectures(path: str | Path) -> list[str]:
    """The class names a checkpoint was saved from (its config's `architectures`)."""
    return (_saved_config(path) or {}).get("architectures") or []


def check_checkpoint(path: str | Path, role: str | None = None, flag: str | None = None) -> None:
    """Refuse, with one line naming `path`, what is not a vlm-rlhf checkpoint or, given a `role`, not one of the
    class that role needs: both classes load from either checkpoint (same backbone), so a reward model read as a
    policy gets a random LM head and a policy read as a reward model an untrained score head, and neither says so.
    `flag`: the option that named `path`, said in the fix. Every command checks before it loads anything."""
    if not is_vlm_checkpoint(path):
        raise ValueError(f"{path} is not a vlm-rlhf checkpoint (no config.json with model_type 'vlm_rlhf')")
    if role is None:
        return
    assert role in ROLES, f"unknown checkpoint role {role!r}; expected one of {list(ROLES)}"
    architectures = saved_architectures(path)
    if set(ROLES[role]) & set(architectures):
        return
    other = next((r for r, classes in ROLES.items() if set(classes) & set(architectures)), None)
    if other:
        found = f"a {other} ({', '.join(architectures)})"
    else:
        found = f"a VLM checkpoint saved as {', '.join(architectures)}" if architectures else "a VLM of no known class"
    where = f" as {flag}" if flag else ""
    raise ValueError(f"{path}: is {found}, not a {role}; pass {_SOURCES[role]}{where}")


def load_vlm(path: str | Path, dtype: torch.dtype | None = None) -> tuple[VLMForCausalLM, VLMProcessor]:
    """Load a saved policy and its processor; a clear error when `path` is not one (`check_checkpoint`)."""
    check_checkpoint(path, "policy")
    from transformers import AutoProcessor

    model = VLMForCausalLM.from_pretrained(path, dtype=dtype)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor
