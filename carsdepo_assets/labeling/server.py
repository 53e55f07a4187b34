"""Run the local Label Studio server: start, stop, status (no Dagster here).

The server comes from its own virtual environment (``.venv-label-studio``, made by
``make install-label-studio``; ``$CARSDEPO_LABEL_STUDIO_BIN`` names another executable). Its
data, log and pid file live under ``CARSDEPO_HOME/label-studio``. It serves the image store
through local-files serving, with the state directory as the document root. Credentials come
from the environment, with documented local defaults (label_studio/README.md):

======================  ==========================
``LABEL_STUDIO_URL``      ``http://127.0.0.1:8080``
``LABEL_STUDIO_USERNAME`` ``admin@carsdepo.local``
``LABEL_STUDIO_PASSWORD`` ``carsdepo-local-password``
``LABEL_STUDIO_API_KEY``  ``carsdepo-local-token``
======================  ==========================

These defaults are public, so they are used only where nobody else can reach them: ``start``
refuses them for any address but the loopback interface, and a client gets the local token
(``api_token``) only for the server ``start`` launched from the same state directory on the
loopback interface; anywhere else a missing ``LABEL_STUDIO_API_KEY`` is an error naming it.

Label Studio applies the username, password and token only when it creates the user, on the
first start with a given data directory.

The server record (``label-studio/server.json``) is trusted only for the server it describes:
the process with that pid *and* start time, running label-studio, on this state folder's data
folder and listening on the record's port. A copy of the state folder (its record names the
original's data folder) or a pid since reused by another program is never this folder's
server: ``status`` and ``stop`` leave such a process alone.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from carsdepo_assets.fileio import atomic_write_json, process_started, same_process_running
from carsdepo_assets.state import PROJECT_ROOT, StateLayout

BIN_ENV_VAR = "CARSDEPO_LABEL_STUDIO_BIN"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_USERNAME = "admin@carsdepo.local"
DEFAULT_PASSWORD = "carsdepo-local-password"
DEFAULT_TOKEN = "carsdepo-local-token"
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
LOG_FILE = "server.log"
DATA_FOLDER = "data"


class ServerError(RuntimeError):
    """The server could not be started or stopped; the message says why and what to do."""


class MissingSecret(RuntimeError):
    """A secret the configuration needs is not set; the message names the variable."""


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens and the admin user it creates."""

    host: str = "127.0.0.1"
    port: int = 8080
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    token: str = DEFAULT_TOKEN

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Settings from ``LABEL_STUDIO_URL/USERNAME/PASSWORD/API_KEY`` or the local defaults."""
        parts = urlsplit(os.environ.get("LABEL_STUDIO_URL") or DEFAULT_URL)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8080,
            username=os.environ.get("LABEL_STUDIO_USERNAME") or DEFAULT_USERNAME,
            password=os.environ.get("LABEL_STUDIO_PASSWORD") or DEFAULT_PASSWORD,
            token=os.environ.get(API_KEY_ENV) or DEFAULT_TOKEN,
        )

    def public_defaults(self) -> list[str]:
        """The variables whose public local default these settings use."""
        return [name for name, value, default in (
            ("LABEL_STUDIO_PASSWORD", self.password, DEFAULT_PASSWORD),
            (API_KEY_ENV, self.token, DEFAULT_TOKEN),
        ) if value == default]


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def api_token(url: str, layout: StateLayout, environ: dict[str, str] | None = None) -> str:
    """The API token for the Label Studio at ``url``: ``LABEL_STUDIO_API_KEY``, or the local
    token for the loopback server ``start`` launched from ``layout``; else MissingSecret."""
    env = os.environ if environ is None else environ
    if env.get(API_KEY_ENV):
        return env[API_KEY_ENV]
    info = _read_pid_file(layout)
    if (info is not None and is_loopback(urlsplit(url).hostname)
            and info.url.rstrip("/") == url.rstrip("/") and _is_own_server(info, layout)):
        return DEFAULT_TOKEN
    raise MissingSecret(
        f"{API_KEY_ENV} is not set: set it to an API token of the Label Studio at {url}. "
        "(The local demo token is only used for the server `carsdepo labelstudio start` runs "
        f"on the loopback interface from this state folder, {layout.root}, and none runs "
        "there at that URL.)"
    )


@dataclass(frozen=True)
class ServerInfo:
    """A running server; ``already_running`` when ``start`` found it up instead of starting it."""

    url: str
    pid: int
    data_dir: str
    log_path: str
    document_root: str
    started: float | None = None  # the process's start time (records before it: None)
    already_running: bool = False


def label_studio_bin() -> Path:
    """The ``label-studio`` executable: ``$CARSDEPO_LABEL_STUDIO_BIN`` or the project's venv."""
    configured = os.environ.get(BIN_ENV_VAR)
    return Path(configured) if configured else PROJECT_ROOT / ".venv-label-studio/bin/label-studio"


def start(
    layout: StateLayout,
    host: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout: float = 180,
    document_root: Path | None = None,
) -> ServerInfo:
    """Start Label Studio in the background and wait for ``/health``; idempotent.

    Arguments left as None come from ``ServerSettings.from_env()``. ``document_root`` (default:
    the state directory) is the folder local-files URLs are relative to; the image store must
    lie under it. The first start on a new data directory runs migrations (~40 s).
    """
    env_settings = ServerSettings.from_env()
    settings = ServerSettings(
        host=host or env_settings.host,
        port=port or env_settings.port,
        username=username or env_settings.username,
        password=password or env_settings.password,
        token=token or env_settings.token,
    )
    running = status(layout)
    if running is not None:
        return ServerInfo(**{**asdict(running), "already_running": True})
    if not is_loopback(settings.host) and settings.public_defaults():
        raise ServerError(
            f"refusing to start Label Studio on {settings.host}, reachable from other "
            f"machines, with the public local defaults of {', '.join(settings.public_defaults())}"
            ": set them"
        )
    executable = label_studio_bin()
    if not executable.is_file():
        raise ServerError(
            f"Label Studio is not installed at {executable}: run `make install-label-studio`, "
            f"or set {BIN_ENV_VAR} to a label-studio executable"
        )
    _check_port_free(settings.host, settings.port)
    folder = layout.label_studio
    data_dir = folder / DATA_FOLDER
    data_dir.mkdir(parents=True, exist_ok=True)
    root = Path(document_root or layout.root).resolve()
    log_path = folder / LOG_FILE
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(executable), "start", "--no-browser", "--enable-legacy-api-token",
                "--data-dir", str(data_dir), "--internal-host", settings.host,
                "--port", str(settings.port),
            ],
            env=server_environment(settings, root, data_dir),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=folder, start_new_session=True,  # its own process group, stopped as a whole
        )
    info = ServerInfo(settings.url, process.pid, str(data_dir), str(log_path), str(root),
                      process_started(process.pid))
    atomic_write_json(layout.label_studio_server_file, asdict(info))
    deadline = time.monotonic() + timeout
    while not _healthy(settings.url):
        if process.poll() is not None:
            layout.label_studio_server_file.unlink(missing_ok=True)
            raise ServerError(
                f"Label Studio exited with code {process.returncode} while starting; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop(layout)
            raise ServerError(
                f"Label Studio did not answer {settings.url}/health within {timeout:.0f} s; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(1)
    return info


def status(layout: StateLayout) -> ServerInfo | None:
    """The server started from this state directory, if its process is alive and healthy."""
    info = _read_pid_file(layout)
    if info is None or not _is_own_server(info, layout):
        return None
    return info if _healthy(info.url) else None


def stop(layout: StateLayout, timeout: float = 30) -> bool:
    """Stop the server by its own pid (SIGTERM, then SIGKILL after ``timeout``).

    Returns False when no server of this state directory was running. A stale pid file (its
    process gone, the pid reused by another program, or a record copied from another state
    folder) is removed without signalling anyone.
    """
    pid_file = layout.label_studio_server_file
    info = _read_pid_file(layout)
    if info is None or not _is_own_process(info, layout):
        pid_file.unlink(missing_ok=True)
        return False
    _signal_group(info.pid, signal.SIGTERM)
    if not _wait_gone(info.pid, timeout):
        _signal_group(info.pid, signal.SIGKILL)
        if not _wait_gone(info.pid, 10):
            raise ServerError(f"Label Studio (pid {info.pid}) survived SIGKILL")
    pid_file.unlink(missing_ok=True)
    return True


def server_environment(
    settings: ServerSettings, document_root: Path, data_dir: Path
) -> dict[str, str]:
    """The environment the server runs with (also right for its one-off commands)."""
    env = dict(os.environ)
    # Label Studio also reads un-prefixed names (HOST, PORT, USERNAME...): pin the ones it uses.
    env.update({
        "LABEL_STUDIO_USERNAME": settings.username,
        "LABEL_STUDIO_PASSWORD": settings.password,
        "LABEL_STUDIO_USER_TOKEN": settings.token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",  # no call to pypi.org at each start
        "LABEL_STUDIO_HOST": "",  # URLs relative to the server root
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_SENTRY_DSN": "",
        "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
    })
    return env


def _check_port_free(host: str, port: int) -> None:
    """Label Studio would silently move to the next free port: refuse a taken one instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServerError(
                f"cannot start Label Studio on {host}:{port}: the port is taken by another "
                f"program ({error.strerror}); stop it or choose another port (LABEL_STUDIO_URL)"
            ) from error


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _read_pid_file(layout: StateLayout) -> ServerInfo | None:
    path = layout.label_studio_server_file
    try:
        payload = json.loads(path.read_text())
        return ServerInfo(**{**payload, "already_running": False})
    except (OSError, ValueError, TypeError):
        return None


def _is_own_server(info: ServerInfo, layout: StateLayout) -> bool:
    """Whether the record ``info`` describes this state folder's server, up and listening on
    the record's port (where the system tells)."""
    return (_is_own_process(info, layout)
            and _listens_on(info.pid, urlsplit(info.url).port) is not False)


def _is_own_process(info: ServerInfo, layout: StateLayout) -> bool:
    """Whether the record ``info`` is of a live label-studio process started on ``layout``'s
    data folder: the same process (pid and start time), not a copied record's or a reused pid."""
    if Path(info.data_dir).resolve() != (layout.label_studio / DATA_FOLDER).resolve():
        return False  # a record copied from another state folder
    return same_process_running(info.pid, info.started) and _is_label_studio(info.pid)


def _listens_on(pid: int, port: int | None) -> bool | None:
    """Whether ``pid`` or one of its children listens on ``port``; None when unknown."""
    try:
        process = psutil.Process(pid)
        for member in [process, *process.children(recursive=True)]:
            for connection in member.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                    return True
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return None
    return False


def _is_label_studio(pid: int) -> bool:
    """True when ``pid`` is alive and (where /proc tells) runs label-studio, not a reused pid."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no /proc on this system: trust the pid
    try:
        command = cmdline.read_bytes()
    except OSError:
        return False
    return b"label-studio" in command or b"label_studio" in command


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reap it once it has exited
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """An exited process whose parent has not reaped it yet (it holds no port, no files)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
