"""`VLMGRPOConfig`: TRL's `GRPOConfig` plus what image-conditioned GRPO needs here (prompts from VQA, the feature
bank, the reward sources, held-out evaluation and the best checkpoint). Parsed from YAML with `--key value`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from vlm.training.stage_config import RLStageConfig


@dataclass
class VLMGRPOConfig(RLStageConfig, GRPOConfig):
    # TRL's defaults changed for short VQA answers: TRL's 512 tokens and `max_completion_length` truncation would
    # sample paragraphs; 8 answers per question is GRPO's group.
    max_completion_length: int | None = field(default=8, metadata={"help": "Answer tokens sampled per prompt."})
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Dropout off in the policy and reference (log-probs of rollout and loss agree)."},
    )
    log_completions: bool = field(default=False, metadata={"help": "Print sampled completions (TRL; rich table)."})

    def __post_init__(self):
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO's baseline is the group), got {self.num_generations}")
        super().__post_init__()
