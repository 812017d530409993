"""`InstructConfig`: TRL's `SFTConfig` with LLaVA-1.5's stage-2 defaults (lr 2e-5, 1 epoch, cosine, warmup 0.03,
weight decay 0, vision tower frozen, projector + LM trained) and what the instruction stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from vlm.adaptation import parse_lora
from vlm.precision import apply_device_defaults


@dataclass
class InstructConfig(SFTConfig):
    # SFTConfig fields whose defaults change (see VQASFTConfig for the first four).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image columns the rows need."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "Logging integrations."})
    completion_only_loss: bool | None = field(default=True, metadata={"help": "Loss on each row's answer + EOS."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Longest row (image tokens counted); longer turns are dropped, not cut."}
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
    lora: dict | str | None = field(
        default=None,
        metadata={"help": "LoRA on the language model: {r, alpha, dropout, target_modules} (YAML or JSON)."},
    )
    cache_vision_features: bool = field(
        default=False, metadata={"help": "Precompute the frozen tower's features once and train without it."}
    )
    vision_feature_cache: str = field(
        default="~/.cache/vlm-rlhf/vision_features", metadata={"help": "Where cached vision features live."}
    )

    def __post_init__(self):
        if self.assistant_only_loss:
            # TRL 1.12 refuses it for vision data (SFTTrainer.__init__); the rows already give the same loss.
            raise ValueError(
                "assistant_only_loss: true is not supported for image conversations by TRL 1.12; instruct already "
                "trains only the answers (one prompt-completion row per answer, completion_only_loss); remove it"
            )
        if self.completion_only_loss is False:
            raise ValueError("completion_only_loss: false would train the system and user turns; remove it")
        apply_device_defaults(self)
        self.lora = parse_lora(self.lora)
        if self.cache_vision_features and not self.freeze_vision:
            raise ValueError("cache_vision_features needs a frozen vision tower; drop freeze_vision: false")
        super().__post_init__()
