"""`vlm-rlhf label serve --data-dir DIR`: a local Label Studio for a user who has none.

Installs the pinned server into its own virtualenv on first use, serves DIR's images as local files, binds to
127.0.0.1 unless told otherwise, prints the URL and how to log in, and stops the server cleanly on Ctrl-C or
SIGTERM. The admin's password and API key are made up on the first start and kept in `<state-dir>/credentials.json`
(owner-only, in an owner-only state dir); the key itself is never printed, and neither goes on the server's command
line (see `labeling.label_studio_server`). A busy port is refused, never silently swapped for the next one.
"""

from __future__ import annotations

import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labeling.label_studio_server import CREDENTIALS, LabelStudioServer, LabelStudioServerError


@dataclass
class ServeConfig:
    data_dir: str | None = field(default=None, metadata={"help": "Folder whose images tasks show (document root)."})
    state_dir: str = field(default="runs/label-studio", metadata={"help": "Label Studio's database and uploads."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (0.0.0.0 exposes it to the network)."})
    port: int = field(default=8080, metadata={"help": "TCP port Label Studio listens on."})
    username: str | None = field(default=None, metadata={"help": "Admin e-mail on first start."})
    venv: str | None = field(default=None, metadata={"help": "Label Studio's own virtualenv (default: a cache dir)."})


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def key_export_line(credentials: Path) -> str:
    """A shell line that reads the API key from `credentials` into LABEL_STUDIO_API_KEY without showing it. It
    names the interpreter running us: a plain PATH may have no `python` (the line would then export nothing)."""
    code = 'import json, sys; print(json.load(open(sys.argv[1]))["api_key"])'
    python = shlex.quote(sys.executable or "python3")
    return f"export LABEL_STUDIO_API_KEY=$({python} -c {shlex.quote(code)} {shlex.quote(str(credentials))})"


def serve(cfg: ServeConfig) -> None:
    if not cfg.data_dir or not Path(cfg.data_dir).is_dir():
        raise ValueError(f"label serve needs --data_dir pointing at an existing folder (got {cfg.data_dir!r})")
    server = LabelStudioServer(
        Path(cfg.state_dir), Path(cfg.data_dir), cfg.host, cfg.port, Path(cfg.venv) if cfg.venv else None, cfg.username
    )

    def ask_to_stop(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, ask_to_stop)
    exited_by_itself = False
    try:
        server.start()  # refuses a busy port; checks that the server answering there is the one it started
        _say(
            f"Label Studio is up at {server.url} (pid {server.process.pid}, log {server.log_path})\n"
            f"  log in as {server.credentials['username']} with password {server.credentials['password']}\n"
            f"  API key for push/pull:  {key_export_line(Path(cfg.state_dir).resolve() / CREDENTIALS)}\n"
            f"  images: push with --document_root {Path(cfg.data_dir).resolve()}\n"
            "Ctrl-C stops it."
        )
        server.process.wait()
        exited_by_itself = True
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, also while it starts: it never outlives us
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    if exited_by_itself:
        raise LabelStudioServerError(
            f"Label Studio exited with code {server.process.returncode}; see {server.log_path}"
        )
    _say("Label Studio stopped.")
