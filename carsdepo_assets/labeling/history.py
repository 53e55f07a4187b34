"""Annotation snapshots on disk: one file per version, plus a pointer to the latest one.

``annotations/<version>.json`` is written by ``AnnotationSnapshot.save``; ``annotations/LATEST``
holds the version the last ``annotations`` run produced, so ``curated_dataset`` (and people)
find it without comparing file times. Both are written atomically.
"""

from __future__ import annotations

from pathlib import Path

from carsdepo_assets.fileio import atomic_write_text
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot

LATEST_FILE = "LATEST"


def write_snapshot(snapshot: AnnotationSnapshot, folder: Path) -> Path:
    """Save the snapshot under its version and point ``LATEST`` at it; returns its path."""
    path = snapshot.save(folder)
    atomic_write_text(folder / LATEST_FILE, snapshot.version + "\n")
    return path


def latest_snapshot_path(folder: Path) -> Path | None:
    """The snapshot the last ``annotations`` run produced, or None when there is none.

    That is the one ``LATEST`` names; without that pointer (a snapshot saved by hand), the most
    recently written ``*.json``. A pointer to a missing file is an error, not a fallback.
    """
    pointer = folder / LATEST_FILE
    if pointer.is_file():
        path = folder / f"{pointer.read_text().strip()}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{pointer} names snapshot {path.name}, which is missing")
        return path
    snapshots = [path for path in folder.glob("*.json") if path.is_file()]
    if not snapshots:
        return None
    return max(snapshots, key=lambda path: (path.stat().st_mtime_ns, path.name))


def load_latest_snapshot(folder: Path) -> AnnotationSnapshot | None:
    """The one way to read the latest snapshot (``latest_snapshot_path``); None without one."""
    path = latest_snapshot_path(folder)
    return None if path is None else AnnotationSnapshot.load(path)
