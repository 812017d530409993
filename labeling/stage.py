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


def _labeled_share(store: Path, answers: list[dict]) -> float:
    labeled = {row["answer_id"] for row in LabelStore(store).latest()}
    return sum(a["answer_id"] in labeled for a in answers) / max(len(answers), 1)


def _from_label_studio(settings: LabelStudioSettings, answers_file: Path, store: Path, data_dir: Path) -> dict:
    connection = {"url": settings.url, "project": settings.project, "api_key": settings.api_key}
    document_root = settings.document_root or str(Path(data_dir).resolve())
    pushed = push(PushConfig(**connection, answers=str(answers_file), document_root=document_root))
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
    plan: LabelingPlan, model: Path, data_dir: Path, split: str, out: Path, label_studio: dict | None
) -> dict:
    """Answers in `out/answers.jsonl` (kept once written), labels in the store `out/store`."""
    answers_file, store, plan_file = out / "answers.jsonl", out / "store", out / "plan.json"
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
                seed=plan.seed,
            )
        )
        atomic_write_json(plan_file, asdict(plan), indent=2)
    if label_studio:
        source = _from_label_studio(LabelStudioSettings.from_config(label_studio), answers_file, store, data_dir)
    else:
        simulate(
            SimulateConfig(
                answers=str(answers_file),
                store=str(store),
                error_rate=plan.error_rate,
                annotators=plan.annotators,
                per_answer=plan.per_answer,
                seed=plan.seed,
            )
        )
        source = {"source": "simulated", "error_rate": plan.error_rate, "annotators": plan.annotators}
    return {
        "answers": str(answers_file),
        "store": str(store),
        **source,
        "stats": label_stats(LabelStore(store).latest()),
    }
