"""`vlm-rlhf label pull --url URL --project NAME --store labels/`: annotations into the append-only label store.

Tasks are read page by page through the paged tasks API, and each page's annotations are appended to the store
before the next page is asked for: if the server goes away mid-pull, what was pulled stays (each append is one
part file renamed into place), the error says so, and the next pull picks up the rest. Annotations already stored
unchanged are not stored again; a changed one (an annotator fixed their verdict) is stored as its next version.
Skipped (cancelled) annotations are not labels and are left out. An annotation we cannot read (an unknown verdict,
no verdict) is reported by task and annotation id after every readable one has been stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from labeling.client import ConnectionConfig, LabelStudioError, connect, find_project, talking_to, task_pages
from labeling.project import read_annotation
from vlm.data.errors import DataError
from vlm.labels.store import LabelStore


@dataclass
class PullConfig(ConnectionConfig):
    store: str = field(default="labels", metadata={"help": "Label store folder (created if missing)."})
    page_size: int = field(default=200, metadata={"help": "Tasks per API page (one store append per page)."})


def _user_names(client, url: str) -> dict[int, str]:
    with talking_to(url, "listing users"):
        return {u.id: u.email or u.username or f"user-{u.id}" for u in client.users.list()}


def label_rows(task: dict, project_id: int, project_title: str, users: dict[int, str]) -> tuple[list, list]:
    """(label rows, problems) for one task as the tasks API returns it (`data`, `annotations`)."""
    data, rows, problems = task["data"], [], []
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        where = f"project {project_id} task {task['id']} annotation {annotation['id']}"
        if not data.get("answer_id"):
            problems.append(f"{where}: the task has no answer_id (not imported by `label push`)")
            continue
        try:
            verdict, corrected = read_annotation(annotation.get("result"), where)
        except DataError as e:
            problems.append(str(e))
            continue
        user = annotation.get("completed_by")
        user_id = user.get("id") if isinstance(user, dict) else user
        rows.append(
            {
                "annotation_id": f"label-studio/{project_id}/{annotation['id']}",
                "answer_id": data["answer_id"],
                "verdict": verdict,
                "corrected_answer": corrected,
                "annotator": users.get(user_id, f"user-{user_id}"),
                "annotator_id": user_id,
                "source": "label-studio",
                "lead_time": annotation.get("lead_time"),
                "created_at": annotation.get("created_at"),
                "updated_at": annotation.get("updated_at"),
                "project": project_title,
                "task_id": task["id"],
                "image": data.get("image_path", data.get("image")),
                "question_id": data.get("question_id"),
                "question": data.get("question"),
                "answer": data.get("answer"),
                "model": data.get("model"),
            }
        )
    return rows, problems


def pull(cfg: PullConfig, after_page: Callable[[int], None] | None = None) -> dict:
    """`after_page(page_number)` runs after each page is stored (tests stop the server there)."""
    if not cfg.url:
        raise ValueError("label pull needs --url URL")
    store = LabelStore(cfg.store)
    store.latest()  # a corrupt store is reported before anything is fetched
    client = connect(cfg.url, cfg.api_key)
    project = find_project(client, cfg.url, cfg.project)
    if project is None:
        raise LabelStudioError(f"Label Studio at {cfg.url} has no project titled {cfg.project!r}; push answers first")
    users = _user_names(client, cfg.url)

    annotations = written = pages = 0
    problems: list[str] = []
    with talking_to(cfg.url, f"reading tasks of project {cfg.project!r} (labels pulled so far are kept)"):
        for page in tqdm(task_pages(client, project.id, cfg.page_size), desc="pulling", unit="page", leave=False):
            rows = []
            for task in page:
                task_rows, task_problems = label_rows(task, project.id, cfg.project, users)
                rows += task_rows
                problems += task_problems
            annotations += len(rows)
            written += len(store.append(rows))
            pages += 1
            if after_page is not None:
                after_page(pages)
    summary = {
        "url": cfg.url,
        "project": cfg.project,
        "project_id": project.id,
        "annotations": annotations,
        "stored": written,
        "unchanged": annotations - written,
        "store": str(store.path),
    }
    if problems:
        raise DataError(
            f"{len(problems)} annotation(s) not stored ({written} new rows were): "
            + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else "")
        )
    return summary
