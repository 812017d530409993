"""Answer records: what a policy answered to a VQA question, one JSON object a line (`answers.jsonl`).

Written by `label generate`, read by labeling (tasks for annotators), the simulated annotator, and reward scoring.
Fields: `answer_id` (stable: hash of the image's bytes, question, answer and model), `image` (path), `image_id`,
`question_id`, `question`, `answer`, `count` (how many of the samples gave this answer), `model`, `split`,
`data_dir`, `sampling` (the generation settings). Reward scoring adds `p_correct` and `reward_model`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from vlm.data.errors import DataError, read_jsonl
from vlm.io import atomic_write_text

REQUIRED = ("answer_id", "image", "question_id", "question", "answer")


def answer_id(image_digest: str, question: str, answer: str, model: str) -> str:
    """Stable id of one answer: the same image bytes, question, answer text and model give the same id."""
    key = json.dumps([image_digest, question.strip(), answer.strip(), model], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def read_answers(path: str | Path) -> list[dict]:
    """All records of an answers file; a malformed line or a missing field is a `DataError` naming the line."""
    records, seen = [], set()
    for where, record in read_jsonl(path):
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise DataError(f"{where}: record has no {', '.join(missing)}")
        if record["answer_id"] in seen:
            raise DataError(f"{where}: answer_id {record['answer_id']} appears twice")
        seen.add(record["answer_id"])
        records.append(record)
    return records


def write_answers(path: str | Path, records: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
