"""Reader for LLaVA-Instruct JSON: `[{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]}]`.

`image` is relative to `image_folder`; a row without it is text-only. `<image>` sits at the start or the end of the
first human turn (LLaVA's convention); elsewhere, or in another turn, is an error.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from vlm.data.errors import DataError, read_json
from vlm.data.images import check_image_exists, verify_image
from vlm.processing_vlm import IMAGE_TOKEN

ROLES = ("human", "gpt")


def _check_conversation(conv, path: Path, where: str, has_image: bool) -> list[dict]:
    if not isinstance(conv, list) or not conv:
        raise DataError(f"{path}: {where} has no 'conversations' list")
    turns = []
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise DataError(f"{path}: {where} conversations[{j}] needs 'from' in {ROLES} and a string 'value'")
        turns.append({"from": turn["from"], "value": turn["value"]})
    n_image = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    first_human = next((t["value"].strip() for t in turns if t["from"] == "human"), "")
    if has_image:
        at_edge = first_human.startswith(IMAGE_TOKEN) or first_human.endswith(IMAGE_TOKEN)
        if n_image != 1 or not at_edge:
            raise DataError(
                f"{path}: {where} needs exactly one {IMAGE_TOKEN}, at the start or end of the first human turn"
            )
    elif n_image:
        raise DataError(f"{path}: {where} has {IMAGE_TOKEN} in its text but no 'image'")
    return turns


def load_llava_instruct(
    json_path: str | Path, image_folder: str | Path, verify_images: bool = False, limit: int | None = None
) -> Dataset:
    """Columns: id (str), image_path (str, "" for text-only rows), conversations (list of {from, value})."""
    path, image_folder = Path(json_path), Path(image_folder)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of conversations")
    rows = []
    check = verify_image if verify_images else check_image_exists
    for i, item in enumerate(data[:limit] if limit else data):
        if not isinstance(item, dict):
            raise DataError(f"{path}: record [{i}] is not an object")
        where = f"record [{i}] (id {item.get('id', '?')})"
        image = item.get("image")
        if image is not None and not isinstance(image, str):
            raise DataError(f"{path}: {where} has a non-string 'image'")
        turns = _check_conversation(item.get("conversations"), path, where, has_image=bool(image))
        image_path = str(image_folder / image) if image else ""
        if image:
            check(image_path, f"{path.name} {where}")
        rows.append({"id": str(item.get("id", i)), "image_path": image_path, "conversations": turns})
    return Dataset.from_list(rows)
