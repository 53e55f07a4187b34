"""Read an input file safely: regular files only, never through a link, never past a limit.

A batch folder, a ``carsdepo predict`` argument or a REST ``path`` can name anything the
process can open. Opening a named pipe blocks until a writer appears, a device such as
``/dev/zero`` never ends, and a symbolic link can point anywhere (``/etc/passwd``). So a file is
opened with ``O_NOFOLLOW | O_NONBLOCK`` (a link is refused by the kernel, a pipe opens without
waiting), ``fstat`` on the open descriptor decides whether it is a regular file (no race with a
swap between check and use), and reading stops one byte past the limit whatever ``st_size``
claims. Within a batch folder every component below the folder is opened the same way, so a
linked sub-folder is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

CHUNK_BYTES = 1024 * 1024
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FOLDER = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISDIR, "folder"),
)


class NotARegularFile(Exception):
    """The path is a link, pipe, device, socket or folder; ``reason`` says which. Not read."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FileTooBig(Exception):
    """More bytes than the limit; ``read_bytes`` is how many were read before stopping."""

    def __init__(self, read_bytes: int, limit: int):
        super().__init__(f"more than {limit:,} bytes")
        self.read_bytes = read_bytes
        self.limit = limit


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def open_regular(path: Path, beneath: Path | None = None) -> int:
    """A read-only descriptor on the regular file ``path``; NotARegularFile otherwise.

    With ``beneath``, ``path`` is relative to that folder and no component below it may be a
    link. The caller closes the descriptor (``os.close``)."""
    folder_fd = None
    try:
        if beneath is not None:
            folder_fd = os.open(beneath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            *folders, name = Path(path).parts
            for folder in folders:
                inner = _open_component(folder, _OPEN_FOLDER, folder_fd, Path(beneath, path))
                os.close(folder_fd)
                folder_fd = inner
        else:
            name = str(path)
        fd = _open_component(name, _OPEN_FILE, folder_fd, path)
    finally:
        if folder_fd is not None:
            os.close(folder_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(f"not a regular file: {kind_of(mode)}, not read")
    return fd


def _open_component(name: str, flags: int, folder_fd: int | None, shown: Path) -> int:
    try:
        return os.open(name, flags, dir_fd=folder_fd)
    except OSError as error:
        link = _link_target(name, folder_fd)
        if link is not None:
            raise NotARegularFile(
                f"symbolic link: not followed (it points to {link})"
            ) from error
        if error.errno == errno.ENXIO:  # a socket cannot be opened
            raise NotARegularFile(
                f"not a regular file: {_kind_at(name, folder_fd)}, not read"
            ) from error
        raise


def _link_target(name: str, folder_fd: int | None) -> str | None:
    try:
        return os.readlink(name, dir_fd=folder_fd)
    except OSError:
        return None


def _kind_at(name: str, folder_fd: int | None) -> str:
    try:
        return kind_of(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
    except OSError:
        return "special file"


def read_capped(fd: int, limit: int) -> bytes:
    """Every byte of ``fd`` from its current offset; FileTooBig past ``limit`` bytes."""
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, min(CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise FileTooBig(total, limit)


def read_regular_file(path: Path, limit: int, beneath: Path | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see ``open_regular``), at most ``limit``."""
    fd = open_regular(path, beneath)
    try:
        return read_capped(fd, limit)
    finally:
        os.close(fd)
