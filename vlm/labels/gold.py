"""Gold answers and annotator quality.

Gold answers are tasks whose right verdict is known from the VQA ground truth, mixed among the answers people
label and shaped exactly like them, so each annotator's accuracy can be measured. Their key (`answer_id` ->
expected verdict) is a JSONL file kept on our side (`<answers>.gold.jsonl`); Label Studio never sees it. Labeling
writes and reports it, the reward stage uses it to drop or down-weight weak annotators, so it lives in the core.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from vlm.data.errors import DataError, read_jsonl
from vlm.io import atomic_write_text

EXPECTED = ("correct", "incorrect")


def gold_key_path(answers: str | Path) -> Path:
    answers = Path(answers)
    return answers.with_name(f"{answers.stem}.gold.jsonl")


def read_gold(paths: str | Path | Sequence[str | Path] | None) -> dict[str, str]:
    """answer_id -> expected verdict, from one or more key files (a missing file is an error naming it)."""
    if paths is None:
        return {}
    key = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for where, row in read_jsonl(path):
            if row.get("expected") not in EXPECTED or not row.get("answer_id"):
                raise DataError(f"{where}: a gold row needs answer_id and expected in {EXPECTED}")
            key[row["answer_id"]] = row["expected"]
    return key


def write_gold(path: str | Path, key: dict[str, str]) -> Path:
    """Merge `key` into the key file at `path` (written whole and renamed into place)."""
    merged = read_gold(path) if Path(path).is_file() else {}
    merged.update(key)
    lines = [json.dumps({"answer_id": a, "expected": e}) + "\n" for a, e in sorted(merged.items())]
    return atomic_write_text(path, "".join(lines))


def annotator_quality(rows: Sequence[dict], gold: dict[str, str]) -> dict[str, dict]:
    """Per annotator: labels, gold labels and accuracy on them (`unsure` counts as wrong: gold has a known
    answer), agreement with the other annotators on shared answers, and the median seconds spent per task
    (`lead_time`, from Label Studio; None for simulated rows)."""
    by_answer: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_answer[row["answer_id"]][row["annotator"]] = row["verdict"]
    pairs, agreeing = defaultdict(int), defaultdict(int)
    for verdicts in by_answer.values():
        for (a, va), (b, vb) in itertools.combinations(verdicts.items(), 2):
            for who in (a, b):
                pairs[who] += 1
                agreeing[who] += va == vb
    out: dict[str, dict] = {}
    for annotator in sorted({row["annotator"] for row in rows}):
        mine = [row for row in rows if row["annotator"] == annotator]
        on_gold = [row for row in mine if row["answer_id"] in gold]
        right = sum(row["verdict"] == gold[row["answer_id"]] for row in on_gold)
        times = [row["lead_time"] for row in mine if row.get("lead_time") is not None]
        out[annotator] = {
            "labels": len(mine),
            "gold_labels": len(on_gold),
            "gold_accuracy": right / len(on_gold) if on_gold else None,
            "agreement": agreeing[annotator] / pairs[annotator] if pairs[annotator] else None,
            "median_lead_time": statistics.median(times) if times else None,
        }
    return out
