"""Reader for the official VQA v2 layout.

    <root>/v2_OpenEnded_mscoco_<split>_questions.json   {"questions": [{"image_id", "question", "question_id"}]}
    <root>/v2_mscoco_<split>_annotations.json            {"annotations": [{"question_id", "image_id", "answers": [10 x
                                                            {"answer", "answer_confidence", "answer_id"}],
                                                            "multiple_choice_answer", "question_type", "answer_type"}]}
    <root>/<split>/COCO_<split>_<12-digit image id>.jpg

Annotations may be absent (test-dev style): the dataset then has questions only. Images are not decoded here:
rows carry `image_path`, decoded on use with `vlm.data.images.load_image`.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from vlm.data.errors import DataError, read_json
from vlm.data.images import check_image_exists, verify_image


def questions_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"v2_OpenEnded_mscoco_{split}_questions.json"


def annotations_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"v2_mscoco_{split}_annotations.json"


def image_file(image_dir: str | Path, split: str, image_id: int) -> Path:
    return Path(image_dir) / f"COCO_{split}_{image_id:012d}.jpg"


def _records(obj, key: str, path: Path) -> list:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a '{key}' list")
    return obj[key]


def _field(record, name: str, kind: type, path: Path, where: str):
    if not isinstance(record, dict) or name not in record:
        raise DataError(f"{path}: {where} lacks '{name}'")
    value = record[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"{path}: {where} has '{name}' of type {type(value).__name__}, expected {kind.__name__}")
    return value


def load_vqa(
    root: str | Path,
    split: str,
    image_dir: str | Path | None = None,
    limit: int | None = None,
    require_annotations: bool = False,
    verify_images: bool = False,
) -> Dataset:
    """Read VQA v2 questions (+ annotations when present) for `split`, e.g. "train2014" / "val2014".

    Columns: question_id, image_id, question, image_path; with annotations also answers (10 strings),
    answer_confidences, multiple_choice_answer, question_type, answer_type. Every image file must exist;
    `verify_images` also checks each one's header (catches truncated or non-image files up front).
    """
    root = Path(root)
    image_dir = Path(image_dir) if image_dir is not None else root / split
    q_path, a_path = questions_file(root, split), annotations_file(root, split)
    questions = _records(read_json(q_path), "questions", q_path)
    if not questions:
        raise DataError(f"{q_path}: no questions in the file (split {split})")

    rows: dict[int, dict] = {}
    for i, q in enumerate(questions):
        where = f"questions[{i}]"
        qid = _field(q, "question_id", int, q_path, where)
        where = f"questions[{i}] (question_id {qid})"
        if qid in rows:
            raise DataError(f"{q_path}: {where} is a duplicate question id")
        image_id = _field(q, "image_id", int, q_path, where)
        rows[qid] = {
            "question_id": qid,
            "image_id": image_id,
            "question": _field(q, "question", str, q_path, where),
            "image_path": str(image_file(image_dir, split, image_id)),
        }
        if limit is not None and len(rows) >= limit:
            break

    has_annotations = a_path.exists()
    if require_annotations and not has_annotations:
        raise DataError(f"{a_path}: annotations file not found (needed for split {split})")
    if has_annotations:
        annotations = _records(read_json(a_path), "annotations", a_path)
        seen: set[int] = set()
        for i, a in enumerate(annotations):
            where = f"annotations[{i}]"
            qid = _field(a, "question_id", int, a_path, where)
            where = f"annotations[{i}] (question_id {qid})"
            if qid not in rows:
                if limit is not None:
                    continue  # the question was cut by `limit`
                raise DataError(f"{a_path}: {where} refers to a question id not in {q_path.name}")
            answers = _field(a, "answers", list, a_path, where)
            if not answers:
                raise DataError(f"{a_path}: {where} has no answers")
            texts = [_field(ans, "answer", str, a_path, f"{where} answers[{j}]") for j, ans in enumerate(answers)]
            image_id = _field(a, "image_id", int, a_path, where)
            if image_id != rows[qid]["image_id"]:
                raise DataError(
                    f"{a_path}: {where} has image_id {image_id}, but the question has {rows[qid]['image_id']}"
                )
            rows[qid].update(
                answers=texts,
                answer_confidences=[str(ans.get("answer_confidence", "")) for ans in answers],
                multiple_choice_answer=_field(a, "multiple_choice_answer", str, a_path, where),
                question_type=_field(a, "question_type", str, a_path, where),
                answer_type=_field(a, "answer_type", str, a_path, where),
            )
            seen.add(qid)
        missing = [qid for qid in rows if qid not in seen]
        if missing:
            raise DataError(f"{a_path}: no annotation for question_id {missing[0]} ({len(missing)} question(s) in all)")

    check = verify_image if verify_images else check_image_exists
    checked: set[str] = set()
    for row in rows.values():
        if row["image_path"] not in checked:
            check(row["image_path"], f"question_id {row['question_id']}, image_id {row['image_id']}")
            checked.add(row["image_path"])

    return Dataset.from_list(list(rows.values()))
