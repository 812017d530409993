"""A local Label Studio server: installed in its own virtualenv, bound to 127.0.0.1, started and stopped by PID.

Label Studio pins Django, pyarrow, openai<2, pytz<2023, ... exactly, which clashes with our training stack, so the
server lives in a virtualenv of its own and we only ever call its `label-studio` binary; the project itself talks
to it through `label-studio-sdk`. `label serve` and the integration tests both use this module.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
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

LABEL_STUDIO_VERSION = "1.23.2"  # the server the SDK 2.x client is tested against (see README.md, "Pins")
DEFAULT_USERNAME = "admin@localhost.local"
CREDENTIALS = "credentials.json"

# Variables the server's settings fall back to when set in its environment (a shell's HOST or USERNAME would
# silently change its bind address or default user; observed with Label Studio 1.23.2, where this is how its
# settings are meant to be read, not a bug), so they are removed from the child's environment.
_INHERITED_SETTINGS = (
    "HOST",
    "USERNAME",
    "PASSWORD",
    "PORT",
    "DEBUG",
    "LABEL_STUDIO_HOST",
    "LABEL_STUDIO_PORT",
    "USER_TOKEN",
    "HEARTEX_USERNAME",
    "HEARTEX_PASSWORD",
    "HEARTEX_USER_TOKEN",
)

# The admin's e-mail, password and token go to the server through its environment, never its command line (which
# any local user reads with ps or /proc/<pid>/cmdline; a process's environment only its owner and root can read).
# `label-studio start` 1.23.2 reads them there when no option is given: label_studio/server.py `_create_user` calls
# `get_env("USERNAME" | "PASSWORD" | "USER_TOKEN")`, which tries LABEL_STUDIO_<NAME> first (core/utils/params.py),
# and `start` creates the user when LABEL_STUDIO_USERNAME and LABEL_STUDIO_PASSWORD are both set.
_CREDENTIAL_VARIABLES = {
    "username": "LABEL_STUDIO_USERNAME",
    "password": "LABEL_STUDIO_PASSWORD",
    "api_key": "LABEL_STUDIO_USER_TOKEN",
}


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


def port_in_use(host: str, port: int) -> bool:
    """Whether a program already listens where the server would: anything answering on localhost:`port` (what
    `label-studio start` checks before moving on to the next port by itself) or holding `host`:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        if s.connect_ex(("localhost", port)) == 0:
            return True
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Django's server binds: TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE  # other errors (a bad address, a privileged port): the server says
    return False


def make_private_dir(path: Path) -> Path:
    """A folder only its owner can enter: a state dir's SQLite holds the API token in plain text."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        logger.info("%s: made owner-only (it holds the Label Studio database and its API token)", path)
        path.chmod(0o700)
    return path


def load_or_create_credentials(state_dir: Path, username: str | None = None) -> dict:
    """The admin user of a state dir: made up (random password and API token) on its first start, then reused.

    Kept in `<state_dir>/credentials.json`, readable by its owner only (the state dir too); the token is never
    printed.
    """
    path = state_dir / CREDENTIALS
    if path.is_file():
        return json.loads(path.read_text())
    creds = {
        "username": username or DEFAULT_USERNAME,
        "password": secrets.token_urlsafe(12),
        "api_key": secrets.token_hex(20),
    }
    make_private_dir(state_dir)
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
        self._log_offset = 0  # where this run's lines start in the (appended) server log

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
            PYTHONUNBUFFERED="1",  # "Port N is in use" reaches the log at once (see _check_not_moved)
        )
        env.update({variable: self.credentials[key] for key, variable in _CREDENTIAL_VARIABLES.items()})
        if self.document_root is not None:
            env.update(
                LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
                LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(Path(self.document_root).resolve()),
            )
        return env

    def start(self, timeout: float = 180.0) -> LabelStudioServer:
        """Start the server and return once it answers on `url` as this state dir's server; a busy port is refused
        before anything starts."""
        binary = ensure_label_studio(self.venv)
        if port_in_use(self.host, self.port):
            raise LabelStudioServerError(
                f"{self.host}:{self.port} is already in use (another Label Studio or another program listens there): "
                "stop it, or choose a free port with --port"
            )
        make_private_dir(self.state_dir)
        # No secret here: the admin's e-mail, password and token go through the environment (_CREDENTIAL_VARIABLES).
        command = [
            str(binary),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.state_dir),
            "--enable-legacy-api-token",
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.is_file() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self._environment()
        )
        log.close()
        self._wait_until_up(timeout)
        return self

    def _wait_until_up(self, timeout: float) -> None:
        """Up when this run's log says it serves on our port, /health answers, and the server answering is ours.
        Another server already on the port answers /health at once, so /health alone proves nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with code {self.process.returncode} while starting; see {self.log_path}"
                )
            try:
                if self._check_not_moved() and json.loads(_get(f"{self.url}/health")).get("status") == "UP":
                    try:
                        self.check_identity()
                    except LabelStudioServerError:
                        self.stop()
                        raise
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        self.stop()
        raise LabelStudioServerError(
            f"Label Studio did not start serving on {self.url} in {timeout:.0f} s; see {self.log_path}"
        )

    def _log_of_this_run(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def _check_not_moved(self) -> bool:
        """Whether this run's log says the server is starting on our port (Django prints that line just before
        binding); a `LabelStudioServerError` when Label Studio moved off it.

        `label-studio start` (1.23.2) moves on to the next free port when ours answers ("Port N is in use. Trying
        to start at N+1"), a deliberate fallback (HumanSignal/label-studio#593) with no flag to turn it off (its
        `--debug` does, with Django's debug pages): the check before starting catches a busy port, this catches one
        taken in between. Needed as long as we start it that way."""
        log = self._log_of_this_run()
        serving = re.findall(r"Starting development server at (\S+)", log)
        tried = re.findall(r"Trying to start at (\d+)", log)
        if tried or (serving and not serving[-1].rstrip("/").endswith(f":{self.port}")):
            self.stop()
            where = serving[-1] if serving else f"port {tried[-1]}"
            raise LabelStudioServerError(
                f"{self.host}:{self.port} was taken before Label Studio could bind it, and Label Studio moved on to "
                f"{where} (so it was stopped): stop whatever listens on {self.host}:{self.port}, or choose another "
                "--port"
            )
        return bool(serving)

    def check_identity(self) -> None:
        """Raise unless the server answering on `url` is this state dir's: it must take this state dir's admin key
        as that admin. A `LabelStudioServerError` naming host:port otherwise (the key is never shown)."""
        request = urllib.request.Request(
            f"{self.url}/api/current-user/whoami", headers={"Authorization": f"Token {self.api_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our own loopback URL)
                email = json.loads(response.read()).get("email")
            problem = None if email == self.credentials["username"] else f"the key belongs to {email!r} there"
        except urllib.error.HTTPError as e:
            problem = f"it refuses this state dir's admin key (HTTP {e.code})"
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError, AttributeError) as e:
            problem = f"it does not answer as Label Studio does ({type(e).__name__})"
        if problem:
            raise LabelStudioServerError(
                f"the server on {self.host}:{self.port} is not the Label Studio of {self.state_dir}: {problem}; "
                f"stop whatever listens on {self.host}:{self.port}, or choose another --port"
            )

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
