"""Real Label Studio servers for the integration tests, and annotators who sign up and label as people do.

One state dir is initialised per test session (migrations: ~30 s, and the two annotators sign up through the
invite link); each test gets a copy of it (~2 s to start) on a free port, stopped by PID at the end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests

from labeling.label_studio_server import LabelStudioServer, copy_state_dir

ANNOTATORS = {"ann1@example.com": "ann1-password-1", "ann2@example.com": "ann2-password-2"}


def sign_up(url: str, admin_key: str, email: str, password: str) -> str:
    """An annotator joins the admin's organisation through its invite link; returns their API token."""
    invite = requests.get(f"{url}/api/invite", headers={"Authorization": f"Token {admin_key}"}, timeout=30)
    invite.raise_for_status()
    link = url + invite.json()["invite_url"]
    session = requests.Session()
    form = session.get(link, timeout=30)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    session.post(
        link,
        data={"email": email, "password": password, "csrfmiddlewaretoken": csrf, "allow_newsletters": "false"},
        headers={"Referer": link},
        timeout=30,
    ).raise_for_status()
    token = session.get(f"{url}/api/current-user/token", timeout=30)
    token.raise_for_status()
    return token.json()["token"]


def initialise_golden(state_dir: Path) -> Path:
    with LabelStudioServer(state_dir) as server:
        tokens = {email: sign_up(server.url, server.api_key, email, pw) for email, pw in ANNOTATORS.items()}
    (state_dir / "annotators.json").write_text(json.dumps(tokens))
    return state_dir


def start_copy(golden: Path, target: Path, document_root: Path | None) -> LabelStudioServer:
    copy_state_dir(golden, target)
    server = LabelStudioServer(target, document_root=document_root)
    server.annotator_tokens = json.loads((target / "annotators.json").read_text())
    return server.start()


def verdict_result(verdict: str, corrected: str | None = None) -> list[dict]:
    result = [{"from_name": "verdict", "to_name": "answer", "type": "choices", "value": {"choices": [verdict]}}]
    if corrected:
        result.append(
            {"from_name": "corrected_answer", "to_name": "answer", "type": "textarea", "value": {"text": [corrected]}}
        )
    return result
