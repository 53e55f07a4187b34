"""The content-addressed image store: ``images/<sha256[:2]>/<sha256>.<ext>`` under CARSDEPO_HOME.

An image's id is the sha256 of the bytes the store keeps, so any copy can be verified by
hashing it. Those bytes are the original file when it needed no normalisation (see
``validate.decode_image``), else a deterministic PNG. Files are written atomically and never
rewritten: storing the same bytes twice is a no-op.

Each image also has an owner record, ``images/owners/<sha256[:2]>/<sha256>``, holding the name
of the batch that first stored it. It is claimed atomically (first writer wins), so re-running
a batch keeps its images ``stored`` while any other batch sees them as duplicates.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from PIL import Image

from carsdepo_assets.fileio import atomic_write_bytes, temporary_file
from carsdepo_assets.images.validate import FORMATS, to_rgb

EXTENSIONS: tuple[str, ...] = tuple(ext for _, ext in FORMATS.values())
_SHA256 = re.compile(r"[0-9a-f]{64}")


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

    def put(self, data: bytes, ext: str) -> str:
        """Store ``data`` (an encoded image with extension ``ext``) and return its sha256."""
        if ext not in EXTENSIONS:
            raise ValueError(f"cannot store an image with extension {ext!r}; use {EXTENSIONS}")
        sha = sha256_hex(data)
        if not self.contains(sha):
            atomic_write_bytes(self.root / sha[:2] / f"{sha}.{ext}", data)
        return sha

    def open(self, sha: str) -> Image.Image:
        """The stored image, fully decoded, as RGB."""
        with Image.open(self.path_for(sha)) as image:
            image.load()
            return image if image.mode == "RGB" else to_rgb(image)

    def owner(self, sha: str) -> str | None:
        """The batch that first stored ``sha``, or None when no batch has claimed it."""
        record = self._owner_path(sha)
        return record.read_text(encoding="utf-8") if record.is_file() else None

    def claim(self, sha: str, batch: str) -> str:
        """Record ``batch`` as the owner of ``sha`` unless another batch did first; return owner.

        The record is written under a temporary name and hard-linked into place, which fails
        when the record exists: two batches racing for one image cannot both win.
        """
        record = self._owner_path(sha)
        if record.is_file():
            return record.read_text(encoding="utf-8")
        fd, tmp_name = temporary_file(record)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(batch.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp_name, record)
        except FileExistsError:
            pass
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return record.read_text(encoding="utf-8")

    def _candidates(self, sha: str) -> list[Path]:
        _check_sha(sha)
        return [self.root / sha[:2] / f"{sha}.{ext}" for ext in EXTENSIONS]

    def _owner_path(self, sha: str) -> Path:
        _check_sha(sha)
        return self.root / "owners" / sha[:2] / sha


def _check_sha(sha: str) -> None:
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"not a sha256 image id: {sha!r}")
