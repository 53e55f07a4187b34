"""Batch manifests: one row per input file of a batch, so that nothing is silently dropped.

Written to ``manifests/<batch>.json`` under CARSDEPO_HOME by ingestion and read by every
downstream stage that needs "the images of this batch".

``rows`` are the files of the batch folder as the last ingestion found them. A batch keeps its
history: an image an earlier ingestion stored whose file has since left the folder (deleted, or
replaced by other content) stays referenced by a ``gone`` row, so the store never holds an
image no manifest names. ``notes`` say what the last ingestion found worth telling (files gone,
a damaged stored image repaired, a damaged manifest rebuilt).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from carsdepo_assets.fileio import DamagedFile, atomic_write_json, read_json

STORED = "stored"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
IGNORED = "ignored"
STATUSES = (STORED, DUPLICATE, QUARANTINED, IGNORED)
GONE = "gone from folder"  # the status of a history row (``BatchManifest.gone``)


@dataclass(frozen=True)
class ManifestRow:
    """What happened to one input file.

    ``path`` is relative to the batch folder. ``sha256`` names the stored image (for ``stored``
    and ``duplicate`` rows), ``reason`` says why a file was quarantined, ignored or deduplicated.
    """

    path: str
    status: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None


@dataclass
class BatchManifest:
    batch: str
    source: str
    rows: list[ManifestRow] = field(default_factory=list)
    gone: list[ManifestRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(row.status for row in self.rows)
        return {status: counted.get(status, 0) for status in STATUSES}

    def image_hashes(self) -> list[str]:
        """Distinct stored images of the batch (stored and duplicate rows), in file order."""
        seen: dict[str, None] = {}
        for row in self.rows:
            if row.sha256 and row.status in (STORED, DUPLICATE):
                seen.setdefault(row.sha256, None)
        return list(seen)

    def referenced_hashes(self) -> set[str]:
        """Every image the batch ever stored or matched: its images and its ``gone`` rows'."""
        return set(self.image_hashes()) | {row.sha256 for row in self.gone if row.sha256}

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "source": self.source,
            "counts": self.counts,
            "files": [asdict(row) for row in self.rows],
            "gone": [asdict(row) for row in self.gone],
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, payload: dict) -> BatchManifest:
        return cls(
            batch=payload["batch"],
            source=payload["source"],
            rows=[ManifestRow(**row) for row in payload["files"]],
            gone=[ManifestRow(**row) for row in payload.get("gone", [])],
            notes=list(payload.get("notes", [])),
        )

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> BatchManifest:
        """The manifest in ``path``; ``DamagedFile`` naming it when it cannot be parsed."""
        action = (f"ingest batch {path.stem} again from its folder (it rebuilds the manifest and "
                  "keeps a copy of the damaged one), or restore the file from a backup")
        payload = read_json(path, action)
        try:
            return cls.from_dict(payload)
        except (KeyError, TypeError, AttributeError) as error:
            raise DamagedFile(path, f"not a batch manifest: {error!r}", action) from error
