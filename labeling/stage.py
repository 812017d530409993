"""Stage 2 as the pipeline runs it: the policy's sampled answers, then labels for them.

Without a Label Studio URL the labels come from the simulated annotators. With one (`label_studio: {url: ...}`
in the pipeline config), the answers are pushed (idempotent) and the store is pulled, polling for up to
`wait_seconds`; when fewer than `min_labeled` of the answers have a label by then, the pipeline stops with a
message saying so, and re-running it later picks up where it stopped (push adds nothing, pull adds the new labels).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from labeling.generate import GenerateConfig, generate
from labeling.pull import PullConfig, pull
from labeling.push import PushConfig, push
from labeling.simulate import SimulateConfig, simulate
from vlm.answers import read_answers
from vlm.data.errors import ServiceError
from vlm.gold import read_gold
from vlm.io import atomic_write_json
from vlm.label_store import LabelStore, label_stats


@dataclass
class LabelStudioSettings:
    url: str
    project: str = "vlm-rlhf answers"
    document_root: str | None = None  # default: the data folder (as `label serve --data_dir` serves it)
    api_key: str | None = None  # default: $LABEL_STUDIO_API_KEY (keep keys out of config files)
    wait_seconds: float = 0.0
    poll_seconds: float = 30.0
    min_labeled: float = 1.0  # share of the answers that must have a label before the pipeline goes on

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
    """Not enough answers are labelled yet; re-run the pipeline once annotators have worked."""


@dataclass
class LabelingPlan:
    questions: int
    samples: int
    temperature: float
    max_new_tokens: int
    annotators: int
    per_answer: int
    error_rate: float
    seed: int = 0
    budget: int | None = None  # answers labelled per round, chosen from the pool (disagreement, then uncertainty)
    random_fraction: float = 0.1
    gold_rate: float = 0.0
    error_rates: str | None = None  # per simulated annotator, e.g. "0.1,0.1,0.3"


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
            f"have a label (the pipeline needs {100 * settings.min_labeled:.0f} %); label them in Label Studio, "
            "then run the pipeline again"
        )
    return {"source": "label-studio", "pushed": pushed["tasks_created"]}


def run_labeling(
    plan: LabelingPlan,
    model: Path,
    data_dir: Path,
    split: str,
    out: Path,
    label_studio: dict | None,
    round_: int = 1,
    reward_model: Path | None = None,
) -> dict:
    """One round: answers in `out/round-<r>/answers.jsonl` (kept once written), labels in the shared store
    `out/store`. With a `budget`, round 1 keeps the answers whose samples disagree most and later rounds those
    the previous round's reward model is least sure of, each plus a random slice; the RM's guess is then the
    annotators' pre-annotation."""
    round_dir = out / f"round-{round_}"
    answers_file, store, plan_file = round_dir / "answers.jsonl", out / "store", round_dir / "plan.json"
    select = None
    if plan.budget:
        select = "uncertainty" if reward_model is not None else "disagreement"
    if plan_file.is_file() and json.loads(plan_file.read_text()) != asdict(plan):
        raise ValueError(
            f"{out} holds answers and labels made with other labeling settings ({plan_file}); "
            "remove that folder to start the labels again, or choose another output_dir"
        )
    if not answers_file.is_file():
        generate(
            GenerateConfig(
                model=str(model),
                data=str(data_dir),
                split=split,
                questions=plan.questions,
                samples=plan.samples,
                temperature=plan.temperature,
                max_new_tokens=plan.max_new_tokens,
                out=str(answers_file),
                seed=plan.seed + round_ - 1,  # another draw of questions each round
                select=select,
                budget=plan.budget,
                random_fraction=plan.random_fraction,
                reward_model=str(reward_model) if reward_model is not None else None,
                skip_labelled=str(store),
            )
        )
        atomic_write_json(plan_file, asdict(plan), indent=2)
    if label_studio:
        settings = LabelStudioSettings.from_config(label_studio)
        source = _from_label_studio(settings, answers_file, store, data_dir, plan.gold_rate)
    else:
        simulate(
            SimulateConfig(
                answers=str(answers_file),
                store=str(store),
                error_rate=plan.error_rate,
                error_rates=plan.error_rates,
                annotators=plan.annotators,
                per_answer=plan.per_answer,
                gold_rate=plan.gold_rate,
                seed=plan.seed + round_ - 1,
            )
        )
        source = {"source": "simulated", "error_rate": plan.error_rate, "annotators": plan.annotators}
    gold = sorted(str(p) for p in out.glob("round-*/answers.gold.jsonl"))
    return {
        "round": round_,
        "selection": select,
        "answers": str(answers_file),
        "store": str(store),
        "gold": gold,
        **source,
        "stats": label_stats(LabelStore(store).latest(), read_gold(gold)),
    }
