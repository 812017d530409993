"""`InstructConfig`: TRL's `SFTConfig` with LLaVA-1.5's stage-2 defaults (lr 2e-5, 1 epoch, cosine, warmup 0.03,
weight decay 0, vision tower frozen, projector + LM trained) and what the instruction stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from vlm.training.stage_config import TrainedPartsConfig


@dataclass
class InstructConfig(TrainedPartsConfig, SFTConfig):
    # SFTConfig fields whose defaults change (see VQASFTConfig for the first three).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image columns the rows need."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Longest conversation (image tokens counted); turns past it are dropped."}
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "LLaVA-1.5 stage 2."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "LLaVA-1.5 stage 2."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "LLaVA-1.5 stage 2."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Below 1: a fraction of the steps (LLaVA: 0.03)."})
    weight_decay: float = field(default=0.0, metadata={"help": "LLaVA-1.5 stage 2."})

    init_from: str | None = field(
        default=None, metadata={"help": "Checkpoint to start from: the PPO policy, or any stage's VLM checkpoint."}
    )
    train_data: str | None = field(default=None, metadata={"help": "LLaVA-Instruct JSON trained on."})
    train_images: str | None = field(default=None, metadata={"help": "Folder the train JSON's `image` is under."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out LLaVA-Instruct JSON (eval loss)."})
    eval_images: str | None = field(default=None, metadata={"help": "Folder the eval JSON's `image` is under."})
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N conversations."})
    eval_limit: int | None = field(default=256, metadata={"help": "Held-out conversations in the eval set."})
    freeze_vision: bool = field(default=True, metadata={"help": "LLaVA keeps CLIP frozen."})
    freeze_projector: bool = field(default=False, metadata={"help": "LLaVA stage 2 trains the projector."})
    freeze_language_model: bool = field(default=False, metadata={"help": "LLaVA stage 2 trains the LM."})

    def __post_init__(self):
        if self.assistant_only_loss:
            # trl 1.12.0's SFTTrainer.__init__ raises "Assistant-only loss is not yet supported for vision datasets"
            # (sft_trainer.py:1052; the open request is trl#3751). `ConversationCollator` gives that loss; when TRL
            # supports it, the collator can go.
            raise ValueError(
                "assistant_only_loss: true is not supported for image conversations by TRL 1.12; instruct already "
                "trains only the answers (sft/instruct_collator.py); remove it"
            )
        super().__post_init__()
