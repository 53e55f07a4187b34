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
    """The latest snapshot's file, or None when no ``annotations`` run has written one."""
    pointer = folder / LATEST_FILE
    if not pointer.is_file():
        return None
    path = folder / f"{pointer.read_text().strip()}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{pointer} names snapshot {path.name}, which is missing")
    return path


def load_latest_snapshot(folder: Path) -> AnnotationSnapshot | None:
    path = latest_snapshot_path(folder)
    return None if path is None else AnnotationSnapshot.load(path)
