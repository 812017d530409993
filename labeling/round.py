"""`vlm-rlhf label round --config configs/demo/labeling.yaml --model POLICY --data_dir DATA --output_dir LABELS`:
one labeling round, the way every other stage runs: its YAML + command line in, `summary.json` out.

The policy's sampled answers go to `<output_dir>/round-<r>/answers.jsonl` (kept once written), their labels to the
shared append-only store `<output_dir>/store`. With a `budget`, round 1 keeps the answers whose samples disagree
most and later rounds (given `--reward_model`, the previous round's) those it is least sure of, each plus a random
slice; the reward model's guess is then the annotators' pre-annotation.

Without `label_studio`, simulated annotators label. With `label_studio: {url: ...}`, the answers are pushed
(idempotent) and the store is pulled, polling for up to `wait_seconds`; when fewer than `min_labeled` of the answers
have a label by then, the round stops saying so, and re-running it later picks up where it stopped (push adds
nothing, pull adds the new labels).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from labeling.generate import GenerateConfig, generate
from labeling.pull import PullConfig, pull
from labeling.push import PushConfig, push
from labeling.selection import UNITS
from labeling.simulate import SimulateConfig, simulate
from vlm.config_parsing import parse_config, record_config
from vlm.data.errors import ServiceError
from vlm.io import atomic_write_json
from vlm.labels.answers import read_answers
from vlm.labels.gold import read_gold
from vlm.labels.store import LabelStore, label_stats
from vlm.training.resume import SUMMARY


@dataclass
class LabelStudioSettings:
    """`RoundConfig.label_studio`: the Label Studio server that real annotators use."""

    url: str = field(metadata={"help": "Label Studio server URL, e.g. http://127.0.0.1:8080."})
    project: str = field(default="vlm-rlhf answers", metadata={"help": "Project title (created if missing)."})
    document_root: str | None = field(
        default=None,
        metadata={
            "help": "The server's local-files document root; default: the data folder (as `label serve "
            "--data_dir` serves it)."
        },
    )
    api_key: str | None = field(
        default=None,
        metadata={"help": "API key; default: $LABEL_STUDIO_API_KEY (keep keys out of config files)."},
    )
    wait_seconds: float = field(
        default=0.0, metadata={"help": "How long the round keeps pulling labels before it stops, in seconds."}
    )
    poll_seconds: float = field(default=30.0, metadata={"help": "Seconds between two pulls while waiting."})
    min_labeled: float = field(
        default=1.0, metadata={"help": "Share (0-1) of the answers that must have a label before the round is done."}
    )

    @classmethod
    def from_config(cls, value: dict) -> LabelStudioSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown label_studio key(s) {sorted(unknown)}; expected some of {sorted(known)}")
        if not value.get("url"):
            raise ValueError("label_studio needs a url")
        return cls(**value)


class LabelsPending(ServiceError):
    """Not enough answers are labelled yet; run the round again once annotators have worked."""


# The settings that decide which answers are made and how they are labelled: a labels folder made with other values
# is refused rather than silently mixed (`round-<r>/plan.json` keeps them).
PLAN_FIELDS = (
    "questions",
    "samples",
    "temperature",
    "max_new_tokens",
    "annotators",
    "per_answer",
    "error_rate",
    "seed",
    "budget",
    "select_by",
    "random_fraction",
    "gold_rate",
    "error_rates",
)


@dataclass
class RoundConfig:
    model: str | None = field(default=None, metadata={"help": "Policy checkpoint whose sampled answers are labelled."})
    data_dir: str | None = field(default=None, metadata={"help": "VQA v2 folder the questions come from."})
    split: str = field(default="train2014", metadata={"help": "VQA split the questions come from."})
    output_dir: str = field(
        default="labels", metadata={"help": "Labels folder: round-<r>/ (answers, plan, summary) and the store."}
    )
    round: int = field(default=1, metadata={"help": "Round number: a new draw of questions each round."})
    reward_model: str | None = field(
        default=None,
        metadata={"help": "The previous round's reward model: with a budget, picks the answers it is least sure of."},
    )
    questions: int = field(default=200, metadata={"help": "Questions the policy answers (the pool, with a budget)."})
    samples: int = field(default=4, metadata={"help": "Sampled answers per question (duplicates merged)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of those answers."})
    max_new_tokens: int = field(default=8, metadata={"help": "Answer length limit (tokens)."})
    budget: int | None = field(
        default=None,
        metadata={
            "help": "Answers labelled this round, chosen from questions x samples (disagreement in round 1, "
            "reward-model uncertainty after); none: label them all."
        },
    )
    select_by: str = field(
        default="question",
        metadata={
            "help": "With a budget: choose whole questions (every distinct sampled answer of each, so the reward "
            "model sees answers to one question side by side) or single answers.",
            "choices": list(UNITS),
        },
    )
    random_fraction: float = field(default=0.1, metadata={"help": "Random slice on top of the budget (unbiased)."})
    gold_rate: float = field(default=0.0, metadata={"help": "Share of gold answers (known verdict) mixed in."})
    annotators: int = field(default=3, metadata={"help": "Simulated annotators."})
    per_answer: int = field(default=2, metadata={"help": "Simulated annotators per answer (<= annotators)."})
    error_rate: float = field(default=0.1, metadata={"help": "Simulated annotators' probability of a wrong verdict."})
    error_rates: str | None = field(
        default=None, metadata={"help": "One error rate per simulated annotator, comma-separated."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of round 1's draws; round r uses seed + r - 1."})
    label_studio: dict | str | None = field(
        default=None,
        metadata={
            "help": "Label with people instead: {url, project, document_root, api_key, wait_seconds, "
            "poll_seconds, min_labeled} (YAML or JSON); none: simulated annotators."
        },
    )

    def __post_init__(self):
        if isinstance(self.label_studio, str):
            self.label_studio = json.loads(self.label_studio) if self.label_studio.strip() else None
        if self.round < 1:
            raise ValueError(f"round must be 1 or more, got {self.round}")

    def plan(self) -> dict:
        return {name: getattr(self, name) for name in PLAN_FIELDS}


def _labeled_share(store: Path, answers: list[dict]) -> float:
    labeled = {row["answer_id"] for row in LabelStore(store).latest()}
    return sum(a["answer_id"] in labeled for a in answers) / max(len(answers), 1)


def _from_label_studio(
    settings: LabelStudioSettings, answers_file: Path, store: Path, data_dir: Path, gold_rate: float
) -> dict:
    connection = {"url": settings.url, "project": settings.project, "api_key": settings.api_key}
    document_root = settings.document_root or str(Path(data_dir).resolve())
    pushed = push(PushConfig(**connection, answers=str(answers_file), document_root=document_root, gold_rate=gold_rate))
    answers = read_answers(answers_file)
    deadline = time.monotonic() + settings.wait_seconds
    while True:
        pull(PullConfig(**connection, store=str(store)))
        share = _labeled_share(store, answers)
        if share >= settings.min_labeled or time.monotonic() >= deadline:
            break
        time.sleep(settings.poll_seconds)
    if share < settings.min_labeled:
        raise LabelsPending(
            f"{100 * share:.0f} % of the {len(answers)} answers in project {settings.project!r} at {settings.url} "
            f"have a label (the round needs {100 * settings.min_labeled:.0f} %); label them in Label Studio, "
            "then run it again"
        )
    return {"source": "label-studio", "pushed": pushed["tasks_created"]}


def run_round(cfg: RoundConfig) -> dict:
    """One round; returns (and writes to `round-<r>/summary.json`) what it made: the answers file, the store, the
    gold key files so far, who labelled, and the store's statistics."""
    if not cfg.model or not cfg.data_dir:
        raise ValueError("label round needs --model (the policy) and --data_dir (the VQA folder)")
    out = Path(cfg.output_dir)
    round_dir = out / f"round-{cfg.round}"
    answers_file, store, plan_file = round_dir / "answers.jsonl", out / "store", round_dir / "plan.json"
    select = ("uncertainty" if cfg.reward_model else "disagreement") if cfg.budget else None
    if plan_file.is_file() and json.loads(plan_file.read_text()) != cfg.plan():
        raise ValueError(
            f"{out} holds answers and labels made with other labeling settings ({plan_file}); "
            "remove that folder to start the labels again, or choose another output_dir"
        )
    if not answers_file.is_file():
        generate(
            GenerateConfig(
                model=cfg.model,
                data=cfg.data_dir,
                split=cfg.split,
                questions=cfg.questions,
                samples=cfg.samples,
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
                out=str(answers_file),
                seed=cfg.seed + cfg.round - 1,  # another draw of questions each round
                select=select,
                select_by=cfg.select_by,
                budget=cfg.budget,
                random_fraction=cfg.random_fraction,
                reward_model=cfg.reward_model,
                skip_labelled=str(store),
            )
        )
        atomic_write_json(plan_file, cfg.plan(), indent=2)
    record_config(cfg, out=round_dir)  # once the policy has answered: a refused round writes nothing
    if cfg.label_studio:
        settings = LabelStudioSettings.from_config(cfg.label_studio)
        source = _from_label_studio(settings, answers_file, store, Path(cfg.data_dir), cfg.gold_rate)
    else:
        simulate(
            SimulateConfig(
                answers=str(answers_file),
                store=str(store),
                error_rate=cfg.error_rate,
                error_rates=cfg.error_rates,
                annotators=cfg.annotators,
                per_answer=cfg.per_answer,
                gold_rate=cfg.gold_rate,
                seed=cfg.seed + cfg.round - 1,
            )
        )
        source = {"source": "simulated", "error_rate": cfg.error_rate, "annotators": cfg.annotators}
    gold = sorted(str(p) for p in out.glob("round-*/answers.gold.jsonl"))
    summary = {
        "round": cfg.round,
        "selection": select,
        "select_by": cfg.select_by if select else None,
        "answers": str(answers_file),
        "store": str(store),
        "gold": gold,
        **source,
        "stats": label_stats(LabelStore(store).latest(), read_gold(gold)),
    }
    atomic_write_json(round_dir / SUMMARY, summary, indent=2)
    return summary


def main(argv=None) -> dict:
    (cfg,) = parse_config((RoundConfig,), argv, prog="vlm-rlhf label round")
    return run_round(cfg)
