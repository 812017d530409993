"""`vlm-rlhf label simulate --answers answers.jsonl --store labels/ --error-rate P --annotators A`.

The demo's stand-in for human annotators, and the ground truth for measuring the reward model: an answer is
correct when its official VQA accuracy against the ten human answers reaches `threshold`; each simulated
annotator reports that verdict, flipped with probability `error_rate` (and `unsure` with probability
`unsure_rate`), and types the most common human answer as the correction when they say `incorrect`. Every row is
marked `source: simulated`. Draws are seeded per (seed, annotator, answer), so re-running with the same settings
stores nothing new, and the verdicts do not depend on the order of the answers.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from labeling.gold_answers import gold_records, mix_in
from vlm.data.errors import DataError
from vlm.data.vqa import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.labels.answers import read_answers
from vlm.labels.gold import gold_key_path, write_gold
from vlm.labels.store import LabelStore


@dataclass
class SimulateConfig:
    answers: str | None = field(default=None, metadata={"help": "answers.jsonl from `label generate`."})
    store: str = field(default="labels", metadata={"help": "Label store folder (created if missing)."})
    data: str | None = field(default=None, metadata={"help": "VQA folder with annotations (default: from records)."})
    split: str | None = field(default=None, metadata={"help": "VQA split (default: from the records)."})
    error_rate: float = field(default=0.1, metadata={"help": "Probability an annotator flips the true verdict."})
    error_rates: str | None = field(
        default=None, metadata={"help": "One error rate per annotator, comma-separated (e.g. 0.1,0.1,0.3)."}
    )
    gold_rate: float = field(default=0.0, metadata={"help": "Mix in this share of gold answers (see label push)."})
    unsure_rate: float = field(default=0.0, metadata={"help": "Probability an annotator answers unsure."})
    annotators: int = field(default=3, metadata={"help": "Number of simulated annotators."})
    per_answer: int = field(default=1, metadata={"help": "Annotators who label each answer (<= annotators)."})
    threshold: float = field(default=0.5, metadata={"help": "VQA accuracy at or above which an answer is correct."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the annotators' draws (each per seed, annotator and answer)."}
    )


def _rng(*key) -> random.Random:
    return random.Random(hashlib.sha256(repr(key).encode()).digest())


def _ground_truth(records: list[dict], cfg: SimulateConfig) -> dict[int, dict]:
    """question_id -> annotation row, for every (data folder, split) the records come from."""
    sources = {(cfg.data or r.get("data_dir"), cfg.split or r.get("split")) for r in records}
    if any(data is None or split is None for data, split in sources):
        raise ValueError("the answers do not say which VQA data they come from: pass --data DIR --split SPLIT")
    truth = {}
    for data, split in sorted(sources):
        for row in load_vqa(data, split, require_annotations=True):
            truth[row["question_id"]] = row
    return truth


def error_rates(cfg: SimulateConfig) -> list[float]:
    """Each annotator's error rate: `error_rates` if given (one per annotator), else `error_rate` for all."""
    if cfg.error_rates is None:
        return [cfg.error_rate] * cfg.annotators
    rates = [float(x) for x in str(cfg.error_rates).split(",")]
    if len(rates) != cfg.annotators:
        raise ValueError(f"error_rates has {len(rates)} values for {cfg.annotators} annotators")
    return rates


def simulated_labels(records: list[dict], truth: dict[int, dict], cfg: SimulateConfig) -> list[dict]:
    if not 1 <= cfg.per_answer <= cfg.annotators:
        raise ValueError(f"per_answer must be between 1 and annotators ({cfg.annotators}), got {cfg.per_answer}")
    rates = error_rates(cfg)
    for name, p in [("unsure_rate", cfg.unsure_rate)] + [("error rate", r) for r in rates]:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability, got {p}")
    annotators = [f"simulated-{i + 1}" for i in range(cfg.annotators)]
    error_of = dict(zip(annotators, rates))
    rows = []
    for r in records:
        if r["question_id"] not in truth:
            raise DataError(f"answer {r['answer_id']}: question_id {r['question_id']} has no VQA annotation")
        human = truth[r["question_id"]]
        accuracy = vqa_accuracy(r["answer"], human["answers"])
        true_verdict = "correct" if accuracy >= cfg.threshold else "incorrect"
        for annotator in _rng(cfg.seed, r["answer_id"]).sample(annotators, cfg.per_answer):
            rng = _rng(cfg.seed, annotator, r["answer_id"])
            if rng.random() < cfg.unsure_rate:
                verdict = "unsure"
            elif rng.random() < error_of[annotator]:
                verdict = "incorrect" if true_verdict == "correct" else "correct"
            else:
                verdict = true_verdict
            rows.append(
                {
                    "annotation_id": f"simulated/{annotator}/{r['answer_id']}",
                    "answer_id": r["answer_id"],
                    "verdict": verdict,
                    "corrected_answer": human["multiple_choice_answer"] if verdict == "incorrect" else None,
                    "annotator": annotator,
                    "source": "simulated",
                    "vqa_accuracy": accuracy,
                    "image": r["image"],
                    "question_id": r["question_id"],
                    "question": r["question"],
                    "answer": r["answer"],
                    "model": r.get("model"),
                }
            )
    return rows


def simulate(cfg: SimulateConfig) -> dict:
    if not cfg.answers:
        raise ValueError("label simulate needs --answers answers.jsonl")
    records = read_answers(cfg.answers)
    gold, key = gold_records(records, cfg.gold_rate, cfg.seed, cfg.threshold)
    if gold:
        write_gold(gold_key_path(cfg.answers), key)
        records = mix_in(records, gold, cfg.seed)
    store = LabelStore(cfg.store)
    rows = simulated_labels(records, _ground_truth(records, cfg), cfg)
    written = store.append(rows)
    return {
        "answers": len(records) - len(gold),
        "gold_answers": len(gold),
        "gold_key": str(gold_key_path(cfg.answers)) if gold else None,
        "labels": len(rows),
        "stored": len(written),
        "store": str(Path(cfg.store)),
    }
