"""The content-addressed image store: ``images/<sha256[:2]>/<sha256>.<ext>`` under CARSDEPO_HOME.

An image's id is the sha256 of the bytes the store keeps, so any copy can be verified by
hashing it. Those bytes are the original file when it needed no normalisation (see
``validate.decode_image``), else a deterministic PNG. Files are written atomically and never
rewritten: storing the same bytes twice is a no-op.

Each image also has an owner record, ``images/owners/<sha256[:2]>/<sha256>``, holding the name
of the batch that first stored it. It is claimed atomically (first writer wins), so re-running
a batch keeps its images ``stored`` while any other batch sees them as duplicates. An empty
record (damaged: a record is never written empty) is claimed anew.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from carsdepo_assets.fileio import atomic_write_bytes, temporary_file
from carsdepo_assets.images.validate import FORMATS, to_rgb

EXTENSIONS: tuple[str, ...] = tuple(ext for _, ext in FORMATS.values())
_SHA256 = re.compile(r"[0-9a-f]{64}")
OWNERS = "owners"
# Told (sha256, what was wrong) when ``put`` replaces a damaged stored copy.
OnRepair = Callable[[str, str], None]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, sha: str) -> Path:
        """Where the image ``sha`` is stored; FileNotFoundError when the store lacks it."""
        for candidate in self._candidates(sha):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"image {sha} is not in the image store at {self.root}")

    def contains(self, sha: str) -> bool:
        return any(candidate.is_file() for candidate in self._candidates(sha))

    def put(self, data: bytes, ext: str, on_repair: OnRepair | None = None) -> str:
        """Store ``data`` (an encoded image with extension ``ext``) and return its sha256.

        A stored copy whose bytes no longer hash to its name is replaced by ``data`` (and
        ``on_repair`` told); an intact one is left untouched."""
        if ext not in EXTENSIONS:
            raise ValueError(f"cannot store an image with extension {ext!r}; use {EXTENSIONS}")
        sha = sha256_hex(data)
        existing = next((path for path in self._candidates(sha) if path.is_file()), None)
        if existing is None:
            atomic_write_bytes(self.root / sha[:2] / f"{sha}.{ext}", data)
        elif (problem := content_problem(existing, sha)) is not None:
            atomic_write_bytes(existing, data)
            if on_repair is not None:
                on_repair(sha, problem)
        return sha

    def open(self, sha: str) -> Image.Image:
        """The stored image, fully decoded, as RGB."""
        with Image.open(self.path_for(sha)) as image:
            image.load()
            return image if image.mode == "RGB" else to_rgb(image)

    def owner(self, sha: str) -> str | None:
        """The batch that first stored ``sha``, or None when no batch has claimed it."""
        record = self._owner_path(sha)
        owner = record.read_text(encoding="utf-8").strip() if record.is_file() else ""
        return owner or None

    def claim(self, sha: str, batch: str) -> str:
        """Record ``batch`` as the owner of ``sha`` unless another batch did first; return owner.

        The record is written under a temporary name and hard-linked into place, which fails
        when the record exists: two batches racing for one image cannot both win.
        """
        if (owner := self.owner(sha)) is not None:
            return owner
        record = self._owner_path(sha)
        fd, tmp_name = temporary_file(record)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(batch.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            if record.is_file():  # empty, so damaged: nobody's claim to respect
                os.replace(tmp_name, record)
            else:
                os.link(tmp_name, record)
        except FileExistsError:
            pass
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return self.owner(sha) or batch

    def owned_by(self, batch: str) -> Iterator[str]:
        """The images whose owner record names ``batch`` (reads every record: a repair path)."""
        owners = self.root / OWNERS
        for record in sorted(owners.glob("*/*")) if owners.is_dir() else []:
            if _SHA256.fullmatch(record.name) and record.is_file() and self.owner(
                    record.name) == batch:
                yield record.name

    def stored_files(self) -> Iterator[tuple[str, Path]]:
        """(sha256, path) of every image file in the store, in no particular order. A file
        with another name (not ``<sha256>.<ext>``) is skipped: see ``stray_files``."""
        for path, sha in self._image_entries():
            if sha is not None:
                yield sha, path

    def stray_files(self) -> Iterator[Path]:
        """Files in the image folders that are not named like a stored image (``.tmp`` files
        of a live writer included)."""
        for path, sha in self._image_entries():
            if sha is None:
                yield path

    def _image_entries(self) -> Iterator[tuple[Path, str | None]]:
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if folder.name == OWNERS or not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                sha, _, ext = path.name.partition(".")
                valid = (_SHA256.fullmatch(sha) and ext in EXTENSIONS and sha[:2] == folder.name
                         and path.is_file())
                yield path, sha if valid else None

    def _candidates(self, sha: str) -> list[Path]:
        _check_sha(sha)
        return [self.root / sha[:2] / f"{sha}.{ext}" for ext in EXTENSIONS]

    def _owner_path(self, sha: str) -> Path:
        _check_sha(sha)
        return self.root / OWNERS / sha[:2] / sha


def content_problem(path: Path, sha: str) -> str | None:
    """What is wrong with the stored file ``path`` of image ``sha`` (its bytes no longer hash
    to ``sha``), or None when it is intact. Decoding is checked separately."""
    data = path.read_bytes()
    if sha256_hex(data) == sha:
        return None
    return (f"its {len(data):,} bytes no longer match its sha256 (truncated or overwritten)"
            if data else "it is empty")


def _check_sha(sha: str) -> None:
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"not a sha256 image id: {sha!r}")
