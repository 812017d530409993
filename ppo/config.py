"""`VLMPPOConfig`: TRL's `PPOConfig` plus what image-conditioned PPO needs (prompts from VQA, the feature bank,
the ground-truth bonus, guard rails, held-out evaluation, resumption). Parsed from YAML with `--key value`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl.experimental.ppo import PPOConfig

from vlm.training.stage_config import StageConfig

BEST_METRICS = ("vqa_accuracy", "reward", "rlhf_reward")
ADVANTAGE_ESTIMATORS = ("gae", "rloo")
REWARD_CHECKS = ("refuse", "warn", "off")


@dataclass
class VLMPPOConfig(StageConfig, PPOConfig):
    # TRL's names for the starting policy and the reward model; no hub defaults here.
    sft_model_path: str | None = field(default=None, metadata={"help": "Policy to start from (the SFT checkpoint)."})
    reward_model_path: str | None = field(default=None, metadata={"help": "Reward model (`reward train`'s output)."})
    value_model_path: str | None = field(
        default=None, metadata={"help": "Value model start (default: the reward model, as LLaVA-RLHF does)."}
    )
    reference_model_path: str | None = field(
        default=None, metadata={"help": "Frozen reference (default: a copy of the policy; the base model with LoRA)."}
    )
    stop_token: str | None = field(default="eos", metadata={"help": "Answers end at EOS (TRL's stop token)."})
    missing_eos_penalty: float | None = field(default=1.0, metadata={"help": "Subtracted when no EOS was sampled."})
    response_length: int = field(default=8, metadata={"help": "Answer tokens sampled per prompt."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    num_sample_generations: int = field(default=0, metadata={"help": "Unused: see sample_every."})

    data_dir: str | None = field(default=None, metadata={"help": "VQA v2 folder the prompts come from."})
    train_split: str = field(default="train2014", metadata={"help": "VQA split the prompts come from."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (default: <data_dir>/<split>)."})
    train_limit: int | None = field(default=None, metadata={"help": "Use the first N questions as prompts."})
    eval_split: str | None = field(default="val2014", metadata={"help": "Held-out split; none to skip evaluation."})
    eval_limit: int | None = field(default=256, metadata={"help": "Held-out questions per evaluation."})
    ground_truth_weight: float = field(
        default=0.0, metadata={"help": "Add w * VQA accuracy of the answer to the RM score where answers are known."}
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
    ratio_tolerance: float = field(
        default=0.02,
        metadata={"help": "Stop when |ratio - 1| at an update's first minibatch exceeds this (log-prob mismatch)."},
    )
    kl_tolerance: float = field(default=0.5, metadata={"help": "Stop when objective/kl falls below -kl_tolerance."})
    collapse_length_factor: float = field(
        default=3.0, metadata={"help": "Stop when mean answer length leaves [start/f, start*f] tokens."}
    )
    num_generations: int = field(
        default=1,
        metadata={"help": "Answers sampled per prompt in an update (TRL's RLOO/GRPO name); they sit side by side."},
    )
    advantage_estimator: str = field(
        default="gae",
        metadata={
            "help": "gae: the value model's GAE (TRL's PPO); rloo: each answer's KL-penalised score minus the mean "
            "of the other answers to its prompt (TRL's RLOO; needs num_generations >= 2; the value model is unused).",
            "choices": list(ADVANTAGE_ESTIMATORS),
        },
    )
    reward_check: str = field(
        default="refuse",
        metadata={
            "help": "Before training, the reward model picks the best of reward_check_samples answers sampled "
            "(at `temperature`) for reward_check_questions training prompts with known answers: refuse or warn "
            "when that pick's VQA accuracy is below greedy decoding's (it would teach the policy to be worse); off.",
            "choices": list(REWARD_CHECKS),
        },
    )
    reward_check_questions: int = field(default=200, metadata={"help": "Training prompts the reward check uses."})
    reward_check_samples: int = field(default=8, metadata={"help": "Answers sampled per prompt in the check."})
    sample_every: int = field(default=10, metadata={"help": "Log a table of sampled answers every N updates."})
    best_metric: str = field(
        default="vqa_accuracy",
        metadata={"help": "Held-out metric the best checkpoint is chosen by.", "choices": list(BEST_METRICS)},
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the newest checkpoint in output_dir."})

    def __post_init__(self):
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {BEST_METRICS}, got {self.best_metric!r}")
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}"
            )
        if self.advantage_estimator == "rloo" and self.num_generations < 2:
            raise ValueError("advantage_estimator rloo needs num_generations >= 2 (its baseline is the other answers)")
        if self.reward_check not in REWARD_CHECKS:
            raise ValueError(f"reward_check must be one of {REWARD_CHECKS}, got {self.reward_check!r}")
        if self.num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {self.num_generations}")
        if self.vision_inputs not in ("features", "pixels"):
            raise ValueError(f"vision_inputs must be features or pixels, got {self.vision_inputs!r}")
        if self.num_mini_batches != 1:
            # trl 1.12.0's loop (which `VLMPPOTrainer.optimise` follows) runs gradient accumulation across
            # minibatch borders and dilutes the per-minibatch stats (observed: ratio ~0.5, shared/notes/ppo.md).
            # Lift this when `optimise` loops over minibatches itself, with a sync at each border.
            raise ValueError("num_mini_batches must be 1 (use gradient_accumulation_steps for smaller micro-batches)")
        super().__post_init__()
