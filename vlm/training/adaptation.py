"""What a stage trains: freeze-flag overrides and LoRA on the language model, shared by every training stage."""

from __future__ import annotations

import json
import re

from peft import LoraConfig

# GPT-2's attention and MLP projections; other LMs name theirs in `lora.target_modules`.
DEFAULT_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


def parse_lora(value: dict | str | None) -> dict | None:
    """A stage config's `lora` setting: a mapping from YAML, or JSON text from the command line."""
    if isinstance(value, str):
        value = json.loads(value)
    if value is not None:
        unknown = set(value) - LORA_KEYS
        if unknown:
            raise ValueError(f"unknown lora key(s) {sorted(unknown)}; expected some of {sorted(LORA_KEYS)}")
    return value


def apply_freeze_overrides(
    model, vision: bool | None = None, projector: bool | None = None, language_model: bool | None = None
) -> None:
    """Set the given freeze flags in the model's config (saved with the checkpoint) and apply them; None keeps the
    checkpoint's own setting."""
    for name, value in (("vision", vision), ("projector", projector), ("language_model", language_model)):
        if value is not None:
            setattr(model.config, f"freeze_{name}", value)
    model.apply_freezing()


def language_model_lora(spec: dict, config, task_type: str = "CAUSAL_LM") -> LoraConfig:
    """A LoRA config restricted to the language model (the tower and projector have modules of the same names);
    the projector, when not frozen, is trained in full and saved with the adapter."""
    if config.freeze_language_model:
        raise ValueError("lora adapts the language model, but freeze_language_model is true; drop one of them")
    names = spec.get("target_modules") or DEFAULT_LORA_TARGETS
    return LoraConfig(
        r=spec.get("r", 8),
        lora_alpha=spec.get("alpha", 16),
        lora_dropout=spec.get("dropout", 0.05),
        target_modules=rf"model\.language_model\..*\.({'|'.join(map(re.escape, names))})",
        modules_to_save=None if config.freeze_projector else ["projector"],
        task_type=task_type,
    )


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
