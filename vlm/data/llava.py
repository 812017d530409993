"""Reader for LLaVA-Instruct JSON: `[{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]}]`.

`image` is relative to `image_folder`; a row without it is text-only. `<image>` sits at the start or the end of the
first human turn (LLaVA's convention); elsewhere, or in another turn, is an error.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from vlm.data.errors import DataError, read_json
from vlm.data.images import check_image_exists, verify_image
from vlm.model.chat_template import assistant_message, user_message
from vlm.model.processing_vlm import IMAGE_TOKEN

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
        conversation_messages(turns, bool(image), f"{path}: {where}")  # roles in order, checked where the file is known
        image_path = str(image_folder / image) if image else ""
        if image:
            check(image_path, f"{path.name} {where}")
        rows.append({"id": str(item.get("id", i)), "image_path": image_path, "conversations": turns})
    return Dataset.from_list(rows)


def conversation_messages(turns: list[dict], has_image: bool, where: str) -> list[dict]:
    """LLaVA turns as chat messages: human -> user, gpt -> assistant; a leading gpt turn and a trailing human turn
    are dropped (LLaVA's preprocessing); `<image>` leaves the text and becomes one image part in the first user
    message. Roles must then alternate, user first."""
    turns = list(turns)
    while turns and turns[0]["from"] == "gpt":
        turns = turns[1:]
    if turns and turns[-1]["from"] == "human":
        turns = turns[:-1]
    if not turns:
        raise DataError(f"{where} has no human turn followed by a gpt answer")
    messages = []
    for k, turn in enumerate(turns):
        expected = "human" if k % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise DataError(f"{where} conversations: turn {k} is {turn['from']!r} where {expected!r} was expected")
        text = turn["value"].replace(IMAGE_TOKEN, "").strip()
        if expected == "human":
            messages.append(user_message(text, with_image=has_image and k == 0))
        else:
            messages.append(assistant_message(text))
    return messages


def conversation_rows(conversations: Dataset) -> Dataset:
    """One chat row per conversation from `load_llava_instruct`'s output, as LLaVA trains it: the whole
    conversation is read once and every answer is trained in its context. Columns: id, image_path, messages."""
    rows = []
    for r in conversations:
        messages = conversation_messages(r["conversations"], bool(r["image_path"]), f"record id {r['id']}")
        rows.append({"id": r["id"], "image_path": r["image_path"], "messages": messages})
    return Dataset.from_list(rows)
