"""`VLMGRPOConfig`: TRL's `GRPOConfig` plus what image-conditioned GRPO needs here (prompts from VQA, the feature
bank, the reward sources, held-out evaluation and the best checkpoint). Parsed from YAML with `--key value`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from vlm.training.stage_config import StageConfig

BEST_METRICS = ("vqa_accuracy", "reward", "rlhf_reward")


@dataclass
class VLMGRPOConfig(StageConfig, GRPOConfig):
    sft_model_path: str | None = field(default=None, metadata={"help": "Policy to start from (the SFT checkpoint)."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (`reward train`'s output); none: VQA accuracy alone (oracle)."}
    )
    data_dir: str | None = field(default=None, metadata={"help": "VQA v2 folder the prompts come from."})
    train_split: str = field(default="train2014", metadata={"help": "VQA split the prompts come from."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (default: <data_dir>/<split>)."})
    train_limit: int | None = field(default=None, metadata={"help": "Use the first N questions as prompts."})
    eval_split: str | None = field(default="val2014", metadata={"help": "Held-out split; none to skip evaluation."})
    eval_limit: int | None = field(default=256, metadata={"help": "Held-out questions per evaluation."})
    ground_truth_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the sampled answer's VQA accuracy in the reward, where answers are known (with no "
            "reward model it is the whole reward). At 0 it is still computed and logged: the over-optimisation watch."
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
        default=None, metadata={"help": "KL to the start policy the run may spend (reported against; not enforced)."}
    )
    best_metric: str = field(
        default="vqa_accuracy",
        metadata={"help": "Held-out metric the best checkpoint is chosen by.", "choices": list(BEST_METRICS)},
    )
    collapse_length_factor: float = field(
        default=3.0, metadata={"help": "Stop when mean answer length leaves [start/f, start*f] tokens."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue from the last complete checkpoint-* in output_dir."}
    )
    # TRL's defaults changed for short VQA answers: TRL's 512 tokens and `max_completion_length` truncation would
    # sample paragraphs; 8 answers per question is GRPO's group.
    max_completion_length: int | None = field(default=8, metadata={"help": "Answer tokens sampled per prompt."})
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Dropout off in the policy and reference (log-probs of rollout and loss agree)."},
    )
    log_completions: bool = field(default=False, metadata={"help": "Print sampled completions (TRL; rich table)."})

    def __post_init__(self):
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {BEST_METRICS}, got {self.best_metric!r}")
        if self.vision_inputs not in ("features", "pixels"):
            raise ValueError(f"vision_inputs must be features or pixels, got {self.vision_inputs!r}")
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO's baseline is the group), got {self.num_generations}")
        super().__post_init__()
