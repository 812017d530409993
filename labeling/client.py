"""Connecting to Label Studio with `label-studio-sdk` 2.x, and one clear error for everything that can go wrong.

The API key comes from `--api-key` or `LABEL_STUDIO_API_KEY`, and is never printed or logged: error messages are
built from the URL, the status code and the server's `detail` only. Both kinds of key work: a legacy token is
sent as `Token <key>`, a personal access token (a JWT) is exchanged by the SDK for short-lived access tokens.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from labeling.project import LABEL_CONFIG, config_problems
from vlm.data.errors import ServiceError

API_KEY_VARIABLE = "LABEL_STUDIO_API_KEY"


@dataclass
class ConnectionConfig:
    url: str | None = field(default=None, metadata={"help": "Label Studio URL, e.g. http://127.0.0.1:8080."})
    project: str = field(default="vlm-rlhf answers", metadata={"help": "Project title (created if missing)."})
    api_key: str | None = field(
        default=None, metadata={"help": "API key (default: $LABEL_STUDIO_API_KEY); legacy token or access token."}
    )


class LabelStudioError(ServiceError):
    """Label Studio could not be reached, refused us, or holds something we cannot use."""


def _detail(error: ApiError) -> str:
    body = error.body
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("detail", "validation_errors") if body.get(k)]
        return ": ".join(parts or [str(body)])[:400]
    return str(body)[:300]


@contextlib.contextmanager
def talking_to(url: str, doing: str):
    """Turn the SDK's and httpx's exceptions into one `LabelStudioError` that says what we were doing."""
    try:
        yield
    except ApiError as e:
        if e.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {url} refused the API key while {doing} (HTTP {e.status_code}: {_detail(e)}); "
                f"check {API_KEY_VARIABLE} or --api-key"
            ) from None
        raise LabelStudioError(
            f"Label Studio at {url} answered HTTP {e.status_code} while {doing}: {_detail(e)}"
        ) from None
    except httpx.TransportError as e:
        raise LabelStudioError(
            f"cannot reach Label Studio at {url} while {doing} ({type(e).__name__}: {e}); is the server running?"
        ) from None


def connect(url: str, api_key: str | None = None, timeout: float = 60.0) -> LabelStudio:
    api_key = api_key or os.environ.get(API_KEY_VARIABLE)
    if not api_key:
        raise LabelStudioError(f"no Label Studio API key: set {API_KEY_VARIABLE} or pass --api-key")
    with talking_to(url, "checking the API key"):
        # Inside: label-studio-sdk 2.1.2 checks a JWT-shaped key in the client's constructor, before any request,
        # and raises ApiError 401 there for one without `exp` or past it (tokens/client_ext.py `_is_valid_jwt_token`).
        client = LabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=timeout)
        client.users.whoami()
    return client


def find_project(client: LabelStudio, url: str, title: str):
    """The project with this title, or None. Two projects with one title is an error: which would we use?"""
    with talking_to(url, f"looking up project {title!r}"):
        found = [p for p in client.projects.list(title=title) if p.title == title]
    if len(found) > 1:
        raise LabelStudioError(f"Label Studio at {url} has {len(found)} projects titled {title!r}; rename all but one")
    if not found:
        return None
    with talking_to(url, f"reading project {title!r}"):
        project = client.projects.get(id=found[0].id)
    problems = config_problems(project.label_config or "")
    if problems:
        raise LabelStudioError(
            f"project {title!r} (id {project.id}) at {url} is not a vlm-rlhf correctness project: "
            + "; ".join(problems)
        )
    return project


def ensure_project(client: LabelStudio, url: str, title: str, instructions: str):
    """The project with this title (checked to be ours), created with our labeling config if there is none."""
    if len(title.strip()) < 3:
        raise LabelStudioError(f"project title {title!r} is too short: Label Studio wants 3 characters or more")
    project = find_project(client, url, title)
    if project is not None:
        return project, False
    with talking_to(url, f"creating project {title!r}"):
        project = client.projects.create(
            title=title,
            label_config=LABEL_CONFIG,
            expert_instruction=instructions,
            show_instruction=True,
            show_skip_button=True,
            description="Is the model's answer to the question about the image correct? (vlm-rlhf)",
        )
    return project, True


def task_pages(client: LabelStudio, project_id: int, page_size: int, fields: str = "all"):
    """The project's tasks one page (a list of dicts) at a time. Written out because the SDK's own page iterator
    asks for one page past the end, which Label Studio answers with 404 "Invalid page": in label-studio-sdk 2.1.2
    `tasks.list` sets `has_next` to "this page was not empty" (tasks/raw_client.py:227), and the server answers an
    out-of-range page with 404 by design (HumanSignal/label-studio#2321). The 0.x SDK had the same bug
    (label-studio-sdk#148, fixed there by #153). Use the SDK's pager again when its `has_next` stops at `total`."""
    page = 1
    seen = 0
    while True:
        response = client.tasks.list(project=project_id, page=page, page_size=page_size, fields=fields)
        items = [t.dict() for t in response.items or []]
        if not items:
            return
        yield items
        seen += len(items)
        total = getattr(response.response, "total", None)
        if total is not None and seen >= total:
            return
        page += 1
