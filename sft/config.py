"""`VQASFTConfig`: TRL's `SFTConfig` plus what answer-only VQA SFT needs (data, starting checkpoint; freezing,
LoRA and cached vision features come with `TrainedPartsConfig`). Parsed from YAML with `--key value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from vlm.training.stage_config import TrainedPartsConfig

ANSWER_MODES = ("multiple_choice", "sample")


@dataclass
class VQASFTConfig(TrainedPartsConfig, SFTConfig):
    # SFTConfig defaults changed for VQA rows: the batch transform needs the image reference columns, and a
    # truncated prompt would cut `<image>` tokens away from their features.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image columns the rows need."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate longer sequences (none: never)."})
    completion_only_loss: bool | None = field(default=True, metadata={"help": "Loss on the answer and EOS only."})

    init_from: str | None = field(default=None, metadata={"help": "VLM checkpoint to start from (init-model's)."})
    data_dir: str | None = field(default=None, metadata={"help": "VQA v2 folder (questions, annotations, images)."})
    train_split: str = field(default="train2014", metadata={"help": "VQA split trained on."})
    eval_split: str | None = field(
        default="val2014", metadata={"help": "Split for the eval loss and VQA accuracy; none to skip."}
    )
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (default: <data_dir>/<split>)."})
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N training questions."})
    eval_limit: int | None = field(default=512, metadata={"help": "Questions evaluated (none: the whole split)."})
    eval_vqa_accuracy: bool = field(
        default=True,
        metadata={
            "help": "At each evaluation also answer the eval questions (greedy): official VQA accuracy overall and "
            "per question type, the learning curve in summary.json."
        },
    )
    eval_max_new_tokens: int = field(default=8, metadata={"help": "Longest answer generated at evaluation."})
    answer: str = field(
        default="multiple_choice",
        metadata={
            "help": "Answer trained on: the VQA multiple_choice_answer, or one of the 10 human answers drawn anew "
            "each time the question is seen.",
            "choices": list(ANSWER_MODES),
        },
    )

    def __post_init__(self):
        if self.answer not in ANSWER_MODES:
            raise ValueError(f"answer must be one of {ANSWER_MODES}, got {self.answer!r}")
        super().__post_init__()
