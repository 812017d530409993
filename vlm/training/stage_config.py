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


RL_BEST_METRICS = ("vqa_accuracy", "reward", "rlhf_reward")


@dataclass
class RLStageConfig(StageConfig):
    """What both RL stages (PPO, GRPO) read the same way: the start and the reward, the VQA prompts, the held-out
    evaluation and its best checkpoint, the reward's ground-truth part, the images, and the guard and budget."""

    # TRL's names for the starting policy and the reward model; no hub defaults here.
    sft_model_path: str | None = field(default=None, metadata={"help": "Policy to start from (the SFT checkpoint)."})
    reward_model_path: str | None = field(default=None, metadata={"help": "Reward model (`reward train`'s output)."})
    data_dir: str | None = field(default=None, metadata={"help": "VQA v2 folder the prompts come from."})
    train_split: str = field(default="train2014", metadata={"help": "VQA split the prompts come from."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (default: <data_dir>/<split>)."})
    train_limit: int | None = field(default=None, metadata={"help": "Use the first N questions as prompts."})
    eval_split: str | None = field(default="val2014", metadata={"help": "Held-out split; none to skip evaluation."})
    eval_limit: int | None = field(default=256, metadata={"help": "Held-out questions per evaluation."})
    best_metric: str = field(
        default="vqa_accuracy",
        metadata={"help": "Held-out metric the best checkpoint is chosen by.", "choices": list(RL_BEST_METRICS)},
    )
    ground_truth_weight: float = field(
        default=0.0,
        metadata={
            "help": "Add w * the sampled answer's VQA accuracy to the reward model's score where answers are known "
            "(with no reward model and w > 0, VQA accuracy alone is the reward)."
        },
    )
    vision_inputs: str = field(
        default="features",
        metadata={
            "help": "features: cached frozen-tower features; pixels: pixel_values (trainable tower).",
            "choices": ["features", "pixels"],
        },
    )
    kl_budget: float | None = field(
        default=None, metadata={"help": "KL to the reference the run may spend (reported against; not enforced)."}
    )
    collapse_length_factor: float = field(
        default=3.0, metadata={"help": "Stop when mean answer length leaves [start/f, start*f] tokens."}
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the newest complete checkpoint."})

    def __post_init__(self):
        if self.best_metric not in RL_BEST_METRICS:
            raise ValueError(f"best_metric must be one of {RL_BEST_METRICS}, got {self.best_metric!r}")
        if self.vision_inputs not in ("features", "pixels"):
            raise ValueError(f"vision_inputs must be features or pixels, got {self.vision_inputs!r}")
        super().__post_init__()
