"""The annotation snapshot: what annotators decided, in pixels, joined to images by sha256.

``annotations`` (the asset) writes one snapshot per materialization to
``annotations/<version>.json``; ``curated_dataset`` reads it. The snapshot is the contract
between labeling and datasets, so neither needs to know the other's internals.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from carsdepo_assets.fileio import atomic_write_json, read_json


@dataclass(frozen=True)
class LabeledBox:
    label: str  # one of taxonomy.CLASS_NAMES
    bbox: tuple[float, float, float, float]  # COCO x, y, width, height in pixels


@dataclass(frozen=True)
class LabeledImage:
    """The resolved labels of one image.

    ``no_damage`` is true when the annotator stated "no damage" (the image is a negative).
    ``fixed_split`` pins an imported image to its published split (``--keep-splits``);
    ``group`` keeps copies of one source photo together when splitting.
    """

    sha256: str
    width: int
    height: int
    boxes: tuple[LabeledBox, ...]
    no_damage: bool = False
    source: str = "label_studio"  # or "imported"
    group: str | None = None
    fixed_split: str | None = None
    task_id: int | None = None
    annotation_id: int | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class RejectedItem:
    task_id: int | None
    reason: str
    detail: str = ""


@dataclass
class AnnotationSnapshot:
    images: list[LabeledImage] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)
    clipped_boxes: int = 0

    @property
    def version(self) -> str:
        """Content hash of the labels: same labels, same version."""
        body = json.dumps([asdict(image) for image in self.images], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "images": [asdict(image) for image in self.images],
            "rejected": [asdict(item) for item in self.rejected],
            "clipped_boxes": self.clipped_boxes,
        }

    @classmethod
    def from_dict(cls, payload: dict) -> AnnotationSnapshot:
        images = [
            LabeledImage(
                **{
                    **image,
                    "boxes": tuple(
                        LabeledBox(box["label"], tuple(box["bbox"])) for box in image["boxes"]
                    ),
                }
            )
            for image in payload["images"]
        ]
        rejected = [RejectedItem(**item) for item in payload.get("rejected", [])]
        return cls(images=images, rejected=rejected, clipped_boxes=payload.get("clipped_boxes", 0))

    def save(self, folder: Path) -> Path:
        path = folder / f"{self.version}.json"
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: Path) -> AnnotationSnapshot:
        """The snapshot in ``path``; ``DamagedFile`` (a ValueError) naming it when truncated."""
        return cls.from_dict(read_json(path, "materialize the `annotations` asset again to write "
                                       "a fresh snapshot, or restore the file from a backup"))
