"""A local Label Studio server: installed in its own virtualenv, bound to 127.0.0.1, started and stopped by PID.

Label Studio pins Django, pyarrow, openai<2, pytz<2023, ... exactly, which clashes with our training stack, so the
server lives in a virtualenv of its own and we only ever call its `label-studio` binary; the project itself talks
to it through `label-studio-sdk`. `label serve` and the integration tests both use this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from vlm.data.errors import ServiceError
from vlm.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"  # the server the SDK 2.x client is tested against (see README, "Pins")
DEFAULT_USERNAME = "admin@localhost.local"
CREDENTIALS = "credentials.json"

# Variables the server's settings fall back to when set in its environment (a shell's HOST or USERNAME would
# silently change its bind address or default user), so they are removed from the child's environment.
_INHERITED_SETTINGS = ("HOST", "USERNAME", "PASSWORD", "PORT", "DEBUG", "LABEL_STUDIO_HOST", "LABEL_STUDIO_PORT")


class LabelStudioServerError(ServiceError):
    pass


def default_venv() -> Path:
    if os.environ.get("VLM_RLHF_LABEL_STUDIO_VENV"):
        return Path(os.environ["VLM_RLHF_LABEL_STUDIO_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "vlm-rlhf" / f"label-studio-{LABEL_STUDIO_VERSION}"


def ensure_label_studio(venv: str | os.PathLike | None = None) -> Path:
    """The `label-studio` binary of our pinned version, installed into `venv` first if it is not there (~1 min)."""
    venv = Path(venv) if venv else default_venv()
    binary, marker = venv / "bin" / "label-studio", venv / ".vlm-rlhf-installed"
    if binary.is_file() and marker.is_file() and marker.read_text().strip() == LABEL_STUDIO_VERSION:
        return binary
    logger.info("installing label-studio==%s into %s (about a minute, once)", LABEL_STUDIO_VERSION, venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"label-studio=={LABEL_STUDIO_VERSION}"],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as e:
        raise LabelStudioServerError(
            f"could not install label-studio=={LABEL_STUDIO_VERSION} into {venv} ({e}); "
            "install it yourself and point VLM_RLHF_LABEL_STUDIO_VENV at that virtualenv"
        ) from e
    atomic_write_text(marker, LABEL_STUDIO_VERSION + "\n")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def load_or_create_credentials(state_dir: Path, username: str | None = None) -> dict:
    """The admin user of a state dir: made up (random password and API token) on its first start, then reused.

    Kept in `<state_dir>/credentials.json`, readable by its owner only; the token is never printed.
    """
    path = state_dir / CREDENTIALS
    if path.is_file():
        return json.loads(path.read_text())
    creds = {
        "username": username or DEFAULT_USERNAME,
        "password": secrets.token_urlsafe(12),
        "api_key": secrets.token_hex(20),
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, creds, indent=2)
    path.chmod(0o600)
    return creds


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own loopback URL)
        return response.read()


@dataclass
class LabelStudioServer:
    """One Label Studio process over one state dir (SQLite, uploads, its SECRET_KEY).

    `document_root` is the folder whose files the server may serve as local files (`/data/local-files/?d=...`):
    the data folder holding the images that tasks show.
    """

    state_dir: Path
    document_root: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    venv: Path | None = None
    username: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self):
        self.state_dir = Path(self.state_dir).resolve()
        self.port = self.port or free_port(self.host)
        self.credentials = load_or_create_credentials(self.state_dir, self.username)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self.credentials["api_key"]

    @property
    def log_path(self) -> Path:
        return self.state_dir / "server.log"

    def _environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _INHERITED_SETTINGS}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.state_dir),
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            SENTRY_DSN="",  # empty: otherwise errors are reported to an outside endpoint
            FRONTEND_SENTRY_DSN="",
            LATEST_VERSION_CHECK="false",
            COLLECT_ANALYTICS="false",
        )
        if self.document_root is not None:
            env.update(
                LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
                LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(Path(self.document_root).resolve()),
            )
        return env

    def start(self, timeout: float = 180.0) -> LabelStudioServer:
        binary = ensure_label_studio(self.venv)
        c = self.credentials
        command = [
            str(binary), "start", "--no-browser", "--internal-host", self.host, "--port", str(self.port),
            "--data-dir", str(self.state_dir), "--username", c["username"], "--password", c["password"],
            "--user-token", c["api_key"], "--enable-legacy-api-token",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self._environment()
        )
        log.close()
        self._wait_until_up(timeout)
        return self

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with code {self.process.returncode} while starting; see {self.log_path}"
                )
            try:
                if json.loads(_get(f"{self.url}/health")).get("status") == "UP":
                    self._check_bound_port()
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        self.stop()
        raise LabelStudioServerError(f"Label Studio did not answer on {self.url}/health in {timeout:.0f} s")

    def _check_bound_port(self) -> None:
        # A busy port silently becomes port+1: make sure the server that answered is ours, on our port.
        match = re.findall(r"Starting development server at (\S+)", self.log_path.read_text(errors="replace"))
        if match and not match[-1].rstrip("/").endswith(f":{self.port}"):
            self.stop()
            raise LabelStudioServerError(f"port {self.port} was busy: Label Studio moved to {match[-1]}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's PID (SIGINT is ignored by a backgrounded server); SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def copy_state_dir(source: Path, target: Path) -> Path:
    """A copy of an initialised state dir starts in ~2 s instead of ~30 s of migrations."""
    shutil.copytree(source, target, symlinks=True)
    (target / "server.log").unlink(missing_ok=True)
    return target
