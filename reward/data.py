"""Reward-model examples from the label store: one per labelled answer (pointwise) or per (correct, incorrect)
pair of answers to one image and question (pairwise), split by image so no image is on both sides.

Each answer's label is its annotators' majority verdict (`vlm.labels.store.aggregate_verdicts`); `unsure` answers
(majority unsure, or a tie) are not trained on. With `weighting: agreement` an answer weighs the share of its
annotators in the majority (3 of 3: 1.0, 2 of 3: 0.67), so conflicting labels count less; `min_agreement` drops
them instead. Simulated rows carry the answer's VQA accuracy, from which the true correctness is kept for
evaluation (`truth`). With `corrections: true`, the right answer an annotator typed beside an `incorrect` verdict is
trained on as a correct answer to the same image and question (`correction_rows`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
from collections import defaultdict
from pathlib import Path

from vlm.data.errors import DataError
from vlm.eval.metrics import normalize_answer
from vlm.labels.gold import annotator_quality, read_gold
from vlm.labels.store import LabelStore, aggregate_verdicts

logger = logging.getLogger(__name__)


def _image_side(image: str, eval_fraction: float, seed: int) -> str:
    """A seeded draw per image (not per answer), so both sides never share an image; keyed by the file name, so
    the split is the same wherever the data folder lives."""
    digest = hashlib.sha256(f"{seed}:{Path(image).name}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def filter_annotators(rows: list[dict], gold: dict[str, str], cfg) -> tuple[list[dict], dict[str, float]]:
    """Annotators whose gold accuracy is below `min_gold_accuracy`: their labels dropped (`gold_filter: drop`), or
    their votes weighted by their gold accuracy (`weight`). Annotators with no gold label are kept as they are."""
    if cfg.min_gold_accuracy is None or not gold:
        return rows, {}
    quality = annotator_quality(rows, gold)
    weak = {
        a: q["gold_accuracy"]
        for a, q in quality.items()
        if q["gold_accuracy"] is not None and q["gold_accuracy"] < cfg.min_gold_accuracy
    }
    if weak:
        logger.info(
            "annotators below gold accuracy %.2f (%s): %s",
            cfg.min_gold_accuracy,
            cfg.gold_filter,
            ", ".join(f"{a} {acc:.2f}" for a, acc in sorted(weak.items())),
        )
    if cfg.gold_filter == "drop":
        return [r for r in rows if r["annotator"] not in weak], {}
    return rows, weak


def labelled_answers(store: str, cfg) -> list[dict]:
    """One row per labelled answer: image, question, answer, label (1 correct / 0 incorrect / -1 unsure or a tie,
    which `check_trainable` drops), weight, agreement, annotators, its side of the image split, and `truth` where
    the rows carry VQA accuracy (simulated)."""
    latest = LabelStore(store).latest()
    if not latest:
        raise DataError(f"label store {store} holds no labels")
    gold = read_gold(cfg.gold)
    latest, vote_weight = filter_annotators(latest, gold, cfg)
    truth = {}
    for row in latest:
        if row.get("vqa_accuracy") is not None:
            truth[row["answer_id"]] = int(row["vqa_accuracy"] >= cfg.truth_threshold)
    rows = []
    aggregated = aggregate_verdicts(latest, vote_weight)
    for answer_id, agg in aggregated.items():
        side = _image_side(agg["image"], cfg.eval_fraction, cfg.seed)
        if answer_id in gold and side == "eval":
            continue  # gold answers are known, not unseen: never part of the held-out evaluation
        rows.append(
            {
                "answer_id": answer_id,
                "image": agg["image"],
                "question_id": agg["question_id"],
                "question": agg["question"],
                "answer": agg["answer"],
                "verdict": agg["verdict"],
                "label": {"correct": 1, "incorrect": 0}.get(agg["verdict"], -1),
                "agreement": agg["agreement"],
                "weight": agg["agreement"] if cfg.weighting == "agreement" else 1.0,
                "annotators": agg["annotators"],
                "truth": truth.get(answer_id, -1),
                "gold": answer_id in gold,
                "correction": False,
                "side": side,
            }
        )
    if cfg.corrections:
        rows += correction_rows(rows, {a: agg["corrected_answers"] for a, agg in aggregated.items()})
    return rows


def correction_rows(rows: list[dict], typed: dict[str, list[str]]) -> list[dict]:
    """Correct answers from the annotators' typed corrections: where the verdict on an answer to a training image is
    `incorrect` and its annotators typed one right answer (after VQA normalisation) that differs from it, that
    answer is a correct answer to the same image and question, weighing what the judged answer weighs. Clicking
    "incorrect" says what is wrong; the correction says what is right, and it gives the question a (correct,
    incorrect) pair the policy's samples may lack. A correction that repeats an answer already labelled for that
    image and question adds nothing. Held-out images get none: the evaluation stays on the policy's own answers."""
    seen = {(r["image"], r["question"], normalize_answer(r["answer"])) for r in rows}
    added = []
    for r in rows:
        corrections = {normalize_answer(a) for a in typed.get(r["answer_id"], [])} - {""}
        if r["side"] != "train" or r["label"] != 0 or len(corrections) != 1:
            continue
        (answer,) = corrections
        if (r["image"], r["question"], answer) in seen:
            continue
        seen.add((r["image"], r["question"], answer))
        correct = {"answer_id": f"{r['answer_id']}/corrected", "answer": answer, "verdict": "correct", "label": 1}
        added.append(r | correct | {"truth": -1, "gold": False, "correction": True})
    return added


def check_trainable(rows: list[dict], cfg, store: str) -> list[dict]:
    """The decided, agreed-enough rows; refuses too few labels or a single class with a clear message."""
    decided = [r for r in rows if r["label"] >= 0 and r["agreement"] >= cfg.min_agreement]
    if len(decided) < cfg.min_labels:
        raise DataError(
            f"label store {store}: {len(decided)} answers with a decided verdict (of {len(rows)} labelled), "
            f"fewer than min_labels={cfg.min_labels}; label more answers or lower min_labels"
        )
    classes = {r["label"] for r in decided}
    if len(classes) < 2:
        only = "correct" if classes == {1} else "incorrect"
        raise DataError(
            f"label store {store}: every decided answer is {only}; a reward model needs both correct and "
            "incorrect answers"
        )
    for side in ("train", "eval"):
        if not any(r["side"] == side for r in decided):
            raise DataError(f"label store {store}: no {side} image after the split; change eval_fraction or seed")
    return decided


def answer_pairs(rows: list[dict], seed: int) -> list[dict]:
    """(chosen = a correct answer, rejected = an incorrect one) for every image and question that has both; each
    pair weighs the smaller of its two answers' weights."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["image"], r["question"])].append(r)
    pairs = []
    for (image, question), group in sorted(groups.items()):
        good = [r for r in group if r["label"] == 1]
        bad = [r for r in group if r["label"] == 0]
        for chosen, rejected in itertools.product(good, bad):
            pairs.append(
                {
                    "image": image,
                    "question": question,
                    "chosen": chosen["answer"],
                    "rejected": rejected["answer"],
                    "weight": min(chosen["weight"], rejected["weight"]),
                    "side": chosen["side"],
                }
            )
    random.Random(seed).shuffle(pairs)
    return pairs
