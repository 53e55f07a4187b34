"""Which folders of the landing zone are complete batches, ready to ingest.

A folder ``landing/<batch>/`` is ready when all of these hold:

- it is a real folder, not a link to one (a link could pull any readable folder into the state);
- its name is a valid batch name (``state.validate_batch_name``) and does not start with a dot;
- it holds no ``.incomplete`` marker file: an uploader that copies a batch slowly creates the
  marker first and deletes it when done;
- it holds at least one file;
- it holds a ``.ready`` marker file (the uploader's "done": a Hadoop-style ``_SUCCESS``), or
  nothing in it (file or sub-folder) changed during the last ``quiet_seconds`` (default 10 s),
  for uploaders that write no marker.

The markers are hidden files, so ingestion lists them as ignored.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from carsdepo_assets.images.ingest import BatchSourceError
from carsdepo_assets.state import StateLayout, validate_batch_name

INCOMPLETE_MARKER = ".incomplete"
READY_MARKER = ".ready"
QUIET_SECONDS = 10.0


@dataclass(frozen=True)
class LandingFolder:
    name: str
    waiting_reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.waiting_reason is None


def scan_landing(
    landing: Path, known: Collection[str], now: float, quiet_seconds: float = QUIET_SECONDS
) -> list[LandingFolder]:
    """The landing folders not in ``known`` (batches already registered), ready or not."""
    if not landing.is_dir():
        return []
    return [
        LandingFolder(entry.name, _waiting_reason(entry, now, quiet_seconds))
        for entry in sorted(landing.iterdir())
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in known
    ]


def landing_batch_folder(layout: StateLayout, batch: str) -> Path:
    """``landing/<batch>``, refused when it is a link: whoever can write in the landing zone
    could otherwise pull any folder the platform can read into the state folder."""
    folder = layout.landing / validate_batch_name(batch)
    if folder.is_symlink():  # said before StateLayout would refuse a link leading outside
        raise BatchSourceError(
            f"{folder} is a link to {os.readlink(folder)}: links in the landing zone are never "
            "ingested; move the folder itself there"
        )
    return layout.landing_folder(batch)


def _waiting_reason(folder: Path, now: float, quiet_seconds: float) -> str | None:
    if folder.is_symlink():
        return f"a link to {os.readlink(folder)}, not a folder: links are never ingested"
    try:
        validate_batch_name(folder.name)
    except ValueError as error:
        return str(error)
    if (folder / INCOMPLETE_MARKER).exists():
        return f"still being written ({INCOMPLETE_MARKER} marker present)"
    newest, files = folder.stat().st_mtime, 0
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:  # removed while we looked: the folder is changing
                newest = now
        files += len(names)
    ready = (folder / READY_MARKER).is_file()
    if files - ready == 0:
        return "empty folder"
    if ready:
        return None
    quiet_for = now - newest
    if quiet_for < quiet_seconds:
        return f"changed {quiet_for:.0f} s ago; waiting for {quiet_seconds:.0f} s without changes"
    return None
