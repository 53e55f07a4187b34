"""Crash-safe file writes: write to a temporary name in the same folder, then rename.

A reader never sees a half-written file, whatever happens mid-write. Files get the mode an
ordinary ``open`` would give them (``0o666`` less the umask; ``0o644`` with the usual umask), not
the ``0o600`` of ``mkstemp``, so that a service running as another user of the group (Label
Studio serving the image store, a backup) can read them. A temporary name carries the writer's
pid: a process killed with SIGKILL cannot clean up after itself, so
``remove_orphaned_temporaries`` removes the temporaries of writers that are gone. A temporary's
name is bounded whatever the target's (a 255-byte name stays writable), and a write that runs
out of space says which folder and how much space is left (``DiskFull``).

A state file that cannot be parsed is reported with its path and what to do (``DamagedFile``,
``read_json``), never as a bare parser error. A process is identified by its pid *and* its
start time (``process_started``, ``same_process_running``): pids are reused, within seconds in
a container that restarts with small pids.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.pid(?P<pid>\d+)\.[^.]+\.tmp")
# A target name longer than this (in bytes) is shortened to its hash in the temporary's name:
# the pid, random part and suffix need about 30 of the 255 bytes a file name may have.
_TEMP_NAME_PART_BYTES = 100
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = "database or disk is full"
_SQLITE_DAMAGED = ("database disk image is malformed", "file is not a database")


class DiskFull(OSError):
    """A write ran out of space; the message names the folder and the space left."""


class DamagedFile(ValueError):
    """A state file that exists but cannot be parsed; the message names it and what to do."""

    def __init__(self, path: Path, problem: str, action: str):
        super().__init__(f"{path} is damaged ({problem}): {action}")
        self.path = Path(path)
        self.problem = problem
        self.action = action


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()


def temporary_file(target: Path) -> tuple[int, str]:
    """An open descriptor and the name of a new temporary file beside ``target``, with the mode
    the final file should have."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, suffix=TEMP_SUFFIX,
                                    prefix=f".{_bounded(target.name)}.pid{os.getpid()}.")
    except OSError as error:
        raise_if_disk_full(error, target.parent)
        raise
    os.fchmod(fd, FILE_MODE)
    return fd, name


def _bounded(name: str) -> str:
    """``name`` itself when short, else a hash of it: a temporary name never overflows."""
    encoded = os.fsencode(name)
    if len(encoded) <= _TEMP_NAME_PART_BYTES:
        return name
    return "long-name-" + hashlib.sha256(encoded).hexdigest()[:24]


def raise_if_disk_full(error: OSError, folder: Path) -> None:
    """Raise ``DiskFull`` naming ``folder`` and its free space when ``error`` is "no space
    left"; return (for the caller to re-raise ``error``) otherwise."""
    if error.errno in _NO_SPACE:
        raise DiskFull(error.errno, disk_full_message(folder)) from error


def disk_full_message(folder: Path) -> str:
    """What to tell a person whose write into ``folder`` found the disk full."""
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    return (f"no space left to write in {folder} ({free}): free some space on that disk and "
            "run the command again (nothing was half-written)")


def explain_state_error(error: BaseException, state_root: Path) -> str:
    """``error``'s message, with what to do when it says the disk is full or a database is
    damaged: SQLite's own words ("database or disk is full", "database disk image is
    malformed") name neither the folder, nor the free space, nor the file."""
    message = str(error)
    if isinstance(error, DiskFull):
        return message
    if getattr(error, "errno", None) in _NO_SPACE or _SQLITE_FULL in message:
        return f"{message}: {disk_full_message(state_root)}"
    if any(words in message for words in _SQLITE_DAMAGED):
        return (f"{message}: a database under {state_root} is damaged; `carsdepo fsck` names "
                "it and what to do")
    return message


@contextmanager
def atomic_writer(path: Path, binary: bool = True) -> Iterator[IO]:
    """A handle on a temporary file beside ``path``, renamed to ``path`` once the block ends
    without error (flushed and synced first); on error the temporary file is removed."""
    fd, tmp_name = temporary_file(path)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise_if_disk_full(error, path.parent)
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, action: str) -> Any:
    """The JSON in ``path``; ``DamagedFile`` naming the file and ``action`` (what to do) when
    it is not valid JSON (truncated, overwritten). A missing file stays a FileNotFoundError."""
    data = Path(path).read_bytes()
    try:
        return json.loads(data)
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise DamagedFile(path, f"not valid JSON: {error}", action) from error


def keep_damaged_copy(path: Path) -> Path:
    """Copy a damaged file to ``<name>.corrupt-<UTC time>`` beside it, for inspection, before
    whatever rebuilds it replaces it (the original stays until then: a crash in between loses
    nothing); returns the copy's path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    copy = Path(path).with_name(f"{_bounded(Path(path).name)}.corrupt-{stamp}")
    atomic_write_bytes(copy, Path(path).read_bytes())
    return copy


def remove_orphaned_temporaries(folders: list[Path]) -> list[Path]:
    """Remove the temporary files under ``folders`` whose writing process no longer exists
    (killed mid-write); a live writer's are kept. Returns what was removed."""
    removed = []
    for folder in folders:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                match = _TEMP_NAME.fullmatch(name)
                if match and not process_alive(int(match["pid"])):
                    path = Path(root, name)
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def process_started(pid: int | None = None) -> float | None:
    """When process ``pid`` (default: this one) started, in seconds since the epoch as psutil
    reports it; None when no such process exists."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def same_process_running(pid: int, started: float | None) -> bool:
    """Whether the process that had ``pid`` and started at ``started`` still runs: a live
    process with that pid that started at another time is another program. Without a recorded
    start time (older records), the pid alone decides."""
    if started is None:
        return process_alive(pid)
    now_started = process_started(pid) if process_alive(pid) else None
    # create_time is computed from boot time and clock ticks: equal to within rounding.
    return now_started is not None and abs(now_started - started) < 0.05


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
