"""The settings every training stage's config shares, as dataclass mixins placed before the TRL/transformers config
(`class VQASFTConfig(TrainedPartsConfig, SFTConfig)`), so `TrlParser` builds the same `--flags` for each stage.

`StageConfig` (all four stages): precision decided per device, TensorBoard logging, LoRA on the language model and
the vision-feature cache folder. `TrainedPartsConfig` (the `Trainer`-based stages: sft, instruct, reward) adds the
freeze-flag overrides and cached vision features, which need a frozen tower. A stage's `__post_init__` checks its
own fields, then calls `super().__post_init__()`, which resolves these before the TRL/transformers one runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlm.training.adaptation import parse_lora
from vlm.training.precision import apply_device_defaults


@dataclass
class StageConfig:
    # TrainingArguments defaults changed: bf16 is decided per device (`apply_device_defaults`), and runs log to
    # TensorBoard.
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision (default: where supported)."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "Logging integrations."})

    lora: dict | str | None = field(
        default=None,
        metadata={"help": "LoRA on the language model: {r, alpha, dropout, target_modules} (YAML or JSON)."},
    )
    vision_feature_cache: str = field(
        default="~/.cache/vlm-rlhf/vision_features", metadata={"help": "Where cached vision features live."}
    )

    def __post_init__(self):
        # Workaround: SFTConfig defaults bf16 to True (since trl#3515; still in trl 1.12.0), which transformers
        # refuses on a CPU ("Your setup doesn't support bf16/gpu"), open as trl#3616. The bf16 part of
        # apply_device_defaults can go when SFTConfig's default follows the device (the fix proposed there).
        apply_device_defaults(self)
        self.lora = parse_lora(self.lora)
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:  # the TRL/transformers config this mixin is placed before
            parent()


@dataclass
class TrainedPartsConfig(StageConfig):
    freeze_vision: bool | None = field(default=None, metadata={"help": "Override the checkpoint's freeze flag."})
    freeze_projector: bool | None = field(default=None, metadata={"help": "Override the checkpoint's freeze flag."})
    freeze_language_model: bool | None = field(
        default=None, metadata={"help": "Override the checkpoint's freeze flag (true: LLaVA's projector-only step)."}
    )
    cache_vision_features: bool = field(
        default=False,
        metadata={"help": "Precompute the frozen tower's features once and train without running it."},
    )

    def __post_init__(self):
        if self.cache_vision_features and self.freeze_vision is False:
            raise ValueError("cache_vision_features needs a frozen vision tower; drop freeze_vision: false")
        super().__post_init__()
