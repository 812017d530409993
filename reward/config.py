"""`RewardConfig`: transformers' `TrainingArguments` plus what a correctness reward model needs (labels, objective,
split, freezing, LoRA, cached vision features). Parsed from YAML with `--key value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from vlm.training.stage_config import TrainedPartsConfig

READOUTS = ("likelihood", "eos")
OBJECTIVES = ("pointwise", "pairwise")
WEIGHTINGS = ("agreement", "none")
CLASS_BALANCE = ("weight", "none")
GOLD_FILTERS = ("drop", "weight")


@dataclass
class RewardConfig(TrainedPartsConfig, TrainingArguments):
    # TrainingArguments default changed: the collator needs the image reference columns.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the columns the collator needs."})

    init_from: str | None = field(default=None, metadata={"help": "SFT checkpoint whose backbone the RM starts from."})
    label_store: str | None = field(default=None, metadata={"help": "Label store folder (`label pull/simulate`)."})
    readout: str = field(
        default="likelihood",
        metadata={
            "help": "likelihood: the logit is a * log p(answer, EOS | image, question) + b through the LM head "
            "(VLMForAnswerLikelihood; a, b fitted to the labels first); eos: a new linear head on the EOS state "
            "(VLMForSequenceClassification).",
            "choices": list(READOUTS),
        },
    )
    objective: str = field(
        default="pointwise",
        metadata={
            "help": "pointwise: BCE on correct (1) / incorrect (0); pairwise: Bradley-Terry on (correct, incorrect) "
            "answers to the same image and question.",
            "choices": list(OBJECTIVES),
        },
    )
    weighting: str = field(
        default="agreement",
        metadata={
            "help": "agreement: weight each answer by the share of its annotators in the majority; none: 1.",
            "choices": list(WEIGHTINGS),
        },
    )
    min_agreement: float = field(default=0.0, metadata={"help": "Drop answers whose majority share is below this."})
    gold: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Gold key file(s) (<answers>.gold.jsonl): annotators' gold accuracy; gold answers are "
            "trained on (images on the train side) and never held out."
        },
    )
    min_gold_accuracy: float | None = field(
        default=None, metadata={"help": "Annotators below this gold accuracy are dropped or down-weighted."}
    )
    gold_filter: str = field(
        default="drop",
        metadata={
            "help": "drop: ignore weak annotators' labels; weight: their votes count their gold accuracy.",
            "choices": list(GOLD_FILTERS),
        },
    )
    corrections: bool = field(
        default=False,
        metadata={
            "help": "Train on the right answers annotators typed beside `incorrect` verdicts, as correct answers "
            "(training images only)."
        },
    )
    class_balance: str = field(
        default="weight",
        metadata={"help": "weight: BCE pos_weight = #incorrect / #correct; none.", "choices": list(CLASS_BALANCE)},
    )
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of the images held out for evaluation."})
    min_labels: int = field(default=50, metadata={"help": "Refuse to train on fewer labelled answers than this."})
    truth_threshold: float = field(
        default=0.5, metadata={"help": "VQA accuracy at which a simulated row's answer is truly correct."}
    )

    def __post_init__(self):
        for name, value, allowed in (
            ("readout", self.readout, READOUTS),
            ("objective", self.objective, OBJECTIVES),
            ("weighting", self.weighting, WEIGHTINGS),
            ("class_balance", self.class_balance, CLASS_BALANCE),
            ("gold_filter", self.gold_filter, GOLD_FILTERS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.min_gold_accuracy is not None and not self.gold:
            raise ValueError("min_gold_accuracy needs the gold key: --gold <answers>.gold.jsonl")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be between 0 and 1, got {self.eval_fraction}")
        super().__post_init__()
