"""`vlm-rlhf label push --url URL --project NAME answers.jsonl`: answers become Label Studio tasks, once each.

The project is created with our labeling config if missing, reused by title otherwise (and refused if its config
is not ours). Tasks already in the project (same `answer_id` in their data) are not imported again, so a push can
be repeated, or resumed after an interruption. A record scored by the reward model (`p_correct`) carries the
model's guess as a prediction, so annotators confirm or correct it.

Images: by default through Label Studio's local-files storage (the server must be started with local files
serving on and a document root above the images; `label serve` does this), or `--images base64` to embed them.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tqdm.auto import tqdm

from labeling.client import ConnectionConfig, connect, ensure_project, talking_to, task_pages
from labeling.gold_answers import gold_records, mix_in
from labeling.project import INSTRUCTIONS, prediction_from_answer, task_from_answer
from vlm.data.errors import DataError
from vlm.labels.answers import read_answers
from vlm.labels.gold import gold_key_path, write_gold

DOCUMENT_ROOT_VARIABLE = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"


@dataclass
class PushConfig(ConnectionConfig):
    answers: str | None = field(default=None, metadata={"help": "answers.jsonl from `label generate`."})
    images: str = field(
        default="local-files", metadata={"help": "How images reach Label Studio: local-files or base64."}
    )
    document_root: str | None = field(
        default=None,
        metadata={"help": f"The server's local-files document root (default: ${DOCUMENT_ROOT_VARIABLE})."},
    )
    model_version: str | None = field(
        default=None, metadata={"help": "Name of the reward model behind `p_correct` pre-annotations."}
    )
    batch_size: int = field(default=500, metadata={"help": "Tasks per import request."})
    gold_rate: float = field(
        default=0.0,
        metadata={
            "help": "Mix in this share of gold answers (known verdict from VQA ground truth; key kept beside "
            "the answers file as <answers>.gold.jsonl, never sent to Label Studio)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the gold answers' draw."})


def _local_file_paths(records: list[dict], root: Path) -> dict[str, str]:
    """Each image's path relative to the document root; an image outside it is an error naming the record."""
    relative = {}
    for r in records:
        image = Path(r["image"]).resolve()
        try:
            relative[r["answer_id"]] = image.relative_to(root).as_posix()
        except ValueError:
            raise DataError(
                f"answer {r['answer_id']}: image {image} is not under the document root {root}; start the server "
                "with a document root above the data folder, or push with --images base64"
            ) from None
        if "/" not in relative[r["answer_id"]]:
            raise DataError(f"answer {r['answer_id']}: image {image} must sit in a folder below {root}, not in it")
    return relative


def _ensure_local_storages(client, url: str, project_id: int, root: Path, folders: set[str]) -> None:
    """Label Studio serves a local file only to a project with a local import storage over its folder. The
    storage is never synced (that would create a task per file): it only grants access."""
    with talking_to(url, "listing local storages"):
        existing = {Path(s.path).resolve() for s in client.import_storage.local.list(project=project_id)}
    for folder in sorted(folders):
        path = (root / folder).resolve()
        if path in existing:
            continue
        doing = (
            f"adding local storage {path} (the server must run with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} or a folder above it)"
        )
        with talking_to(url, doing):
            client.import_storage.local.create(
                project=project_id, path=str(path), title=f"images: {folder}", use_blob_urls=True
            )


def _base64_image(path: str) -> str:
    mime = mimetypes.guess_type(path)[0] or "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def existing_answer_ids(client, url: str, project_id: int) -> set[str]:
    with talking_to(url, "listing the project's tasks"):
        return {t["data"].get("answer_id") for page in task_pages(client, project_id, 1000, "task_only") for t in page}


def push(cfg: PushConfig) -> dict:
    if not cfg.url or not cfg.answers:
        raise ValueError("label push needs --url URL and an answers file (answers.jsonl or --answers FILE)")
    if cfg.images not in ("local-files", "base64"):
        raise ValueError(f"--images must be local-files or base64, not {cfg.images!r}")
    records = read_answers(cfg.answers)
    gold, key = gold_records(records, cfg.gold_rate, cfg.seed)
    records = mix_in(records, gold, cfg.seed)
    for number, r in enumerate(records, 1):  # all checked before anything reaches the server
        if not Path(r["image"]).is_file():
            raise DataError(f"{cfg.answers}: record {number} (answer {r['answer_id']}): image {r['image']} not found")
    if cfg.images == "local-files":
        root_setting = cfg.document_root or os.environ.get(DOCUMENT_ROOT_VARIABLE)
        if not root_setting:
            raise ValueError(
                f"local-files images need the server's document root: --document_root DIR or ${DOCUMENT_ROOT_VARIABLE}"
                " (or --images base64)"
            )
        root = Path(root_setting).resolve()
        relative = _local_file_paths(records, root)

    if key:  # before any task exists, so no gold task is ever without its key
        write_gold(gold_key_path(cfg.answers), key)
    client = connect(cfg.url, cfg.api_key)
    project, created = ensure_project(client, cfg.url, cfg.project, INSTRUCTIONS)
    already = existing_answer_ids(client, cfg.url, project.id)
    new = [r for r in records if r["answer_id"] not in already]
    if cfg.images == "local-files" and new:
        _ensure_local_storages(
            client, cfg.url, project.id, root, {relative[r["answer_id"]].rsplit("/", 1)[0] for r in new}
        )

    predictions = 0
    for start in tqdm(range(0, len(new), cfg.batch_size), desc="pushing", unit="batch", leave=False):
        tasks = []
        for r in new[start : start + cfg.batch_size]:
            if cfg.images == "local-files":
                image_url = "/data/local-files/?d=" + quote(relative[r["answer_id"]])
            else:
                image_url = _base64_image(r["image"])
            task = {"data": task_from_answer(r, image_url)}
            prediction = prediction_from_answer(r, cfg.model_version)
            if prediction is not None:
                task["predictions"] = [prediction]
                predictions += 1
            tasks.append(task)
        with talking_to(cfg.url, f"importing tasks {start}..{start + len(tasks) - 1} of {len(new)}"):
            client.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
    return {
        "url": cfg.url,
        "project": cfg.project,
        "project_id": project.id,
        "project_created": created,
        "answers": len(records) - len(gold),
        "gold_answers": len(gold),
        "tasks_created": len(new),
        "already_in_project": len(records) - len(new),
        "predictions": predictions,
    }
