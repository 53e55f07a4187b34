"""Crash-safe file writes: write to a temporary name in the same folder, then rename.

A reader never sees a half-written file, whatever happens mid-write. Files get the mode an
ordinary ``open`` would give them (``0o666`` less the umask; ``0o644`` with the usual umask), not
the ``0o600`` of ``mkstemp``, so that a service running as another user of the group (Label
Studio serving the image store, a backup) can read them. A temporary name carries the writer's
pid: a process killed with SIGKILL cannot clean up after itself, so
``remove_orphaned_temporaries`` removes the temporaries of writers that are gone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.pid(?P<pid>\d+)\.[^.]+\.tmp")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()


def temporary_file(target: Path) -> tuple[int, str]:
    """An open descriptor and the name of a new temporary file beside ``target``, with the mode
    the final file should have."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.pid{os.getpid()}.", suffix=TEMP_SUFFIX
    )
    os.fchmod(fd, FILE_MODE)
    return fd, name


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


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
