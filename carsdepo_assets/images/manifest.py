"""Batch manifests: one row per input file of a batch, so that nothing is silently dropped.

Written to ``manifests/<batch>.json`` under CARSDEPO_HOME by ingestion and read by every
downstream stage that needs "the images of this batch".
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from carsdepo_assets.fileio import atomic_write_json

STORED = "stored"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
IGNORED = "ignored"
STATUSES = (STORED, DUPLICATE, QUARANTINED, IGNORED)


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

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "source": self.source,
            "counts": self.counts,
            "files": [asdict(row) for row in self.rows],
        }

    @classmethod
    def from_dict(cls, payload: dict) -> BatchManifest:
        return cls(
            batch=payload["batch"],
            source=payload["source"],
            rows=[ManifestRow(**row) for row in payload["files"]],
        )

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> BatchManifest:
        return cls.from_dict(json.loads(path.read_text()))
