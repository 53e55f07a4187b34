"""Curated COCO datasets: an annotation snapshot joined with the image store, split and versioned.

``build_dataset`` writes ``datasets/<version>/{train,val,test}.json`` plus ``dataset.json`` under
CARSDEPO_HOME. COCO ``file_name`` is relative to the image store (``ab/abcd….jpg``) and
``dataset.json`` names the store's absolute path (``image_root``), so a consumer needs exactly
``(coco_json, image_root)`` per split: ``load_dataset(path).split("train")``.

The version is a content hash of the three split files: the same labels on the same images give
the same version, whatever the snapshot's order. The split files of a version never change; a
rebuild only refreshes ``dataset.json`` (source snapshot, skipped images) when that differs.
A dataset folder is written under a temporary name and renamed, so a reader never sees half of
one. Images the dataset cannot use (not in the store, size differing from the labels, unknown
label, neither boxes nor "no damage") are listed in ``dataset.json`` under ``skipped``, with the
reason, instead of failing the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from carsdepo_assets.datasets.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    SplitFractions,
    assign_splits,
)
from carsdepo_assets.fileio import atomic_write_json, read_json
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledImage
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, CLASS_NAMES, coco_categories

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MANIFEST_NAME = "dataset.json"

# Why an image of the snapshot is not in the dataset (``SkippedImage.reason``).
MISSING_FROM_STORE = "missing_from_store"
UNREADABLE = "unreadable"
SIZE_MISMATCH = "size_mismatch"
UNKNOWN_LABEL = "unknown_label"
UNKNOWN_SPLIT = "unknown_fixed_split"
NOT_LABELED = "no_boxes_and_not_negative"
DUPLICATE_ENTRY = "duplicate_entry"


class SplitFiles(NamedTuple):
    """What a trainer or evaluator needs for one split."""

    coco_json: Path
    image_root: Path


@dataclass(frozen=True)
class SkippedImage:
    sha256: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class CuratedDataset:
    """A built dataset folder, as described by its ``dataset.json``."""

    root: Path
    version: str
    image_root: Path
    source_snapshot: str | None
    fractions: dict[str, float]
    counts: dict[str, dict]
    skipped: tuple[SkippedImage, ...]

    def split(self, name: str) -> SplitFiles:
        if name not in SPLITS:
            raise KeyError(f"no split {name!r} in dataset {self.version}; splits are {SPLITS}")
        return SplitFiles(self.root / f"{name}.json", self.image_root)

    @property
    def train(self) -> SplitFiles:
        return self.split("train")

    @property
    def val(self) -> SplitFiles:
        return self.split("val")

    @property
    def test(self) -> SplitFiles:
        return self.split("test")

    def coco(self, name: str) -> dict:
        """The COCO content of one split."""
        return json.loads(self.split(name).coco_json.read_text())

    def cocos(self) -> dict[str, dict]:
        return {name: self.coco(name) for name in SPLITS}

    @property
    def missing_images(self) -> list[str]:
        """Snapshot images not found in the image store."""
        return [item.sha256 for item in self.skipped if item.reason == MISSING_FROM_STORE]


def find_image(image_root: Path, sha256: str) -> Path | None:
    """The stored file of an image, ``<root>/<sha[:2]>/<sha>.<ext>``, or None."""
    for extension in IMAGE_EXTENSIONS:
        candidate = image_root / sha256[:2] / f"{sha256}.{extension}"
        if candidate.is_file():
            return candidate
    return None


def split_counts(coco: dict) -> dict:
    """Images, annotated images, negatives and instances per class of one COCO split."""
    annotated = {annotation["image_id"] for annotation in coco["annotations"]}
    names = {category["id"]: category["name"] for category in coco["categories"]}
    per_class = Counter(names[annotation["category_id"]] for annotation in coco["annotations"])
    return {
        "images": len(coco["images"]),
        "annotated_images": len(annotated),
        "negatives": len(coco["images"]) - len(annotated),
        "instances": {name: per_class.get(name, 0) for name in CLASS_NAMES},
    }


def build_dataset(
    snapshot: AnnotationSnapshot,
    layout: StateLayout,
    fractions: SplitFractions = DEFAULT_FRACTIONS,
) -> CuratedDataset:
    """Write (or find) the curated dataset of ``snapshot`` under ``layout.datasets``."""
    usable, skipped = _usable_images(snapshot, layout.images)
    assignment = assign_splits([image for image, _ in usable], fractions)
    cocos = {
        name: _coco_split(
            name, [(image, path) for image, path in usable if assignment[image.sha256] == name],
            layout.images,
        )
        for name in SPLITS
    }
    canonical = json.dumps(cocos, sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    manifest = {
        "version": version,
        "image_root": str(layout.images.resolve()),
        "splits": {name: f"{name}.json" for name in SPLITS},
        "counts": {name: split_counts(coco) for name, coco in cocos.items()},
        "fractions": fractions.as_dict(),
        "source_snapshot": snapshot.version,
        "skipped": [asdict(item) for item in skipped],
    }
    target = layout.dataset_folder(version)
    if not (target / MANIFEST_NAME).is_file():
        _write_folder(target, cocos, manifest)
    elif json.loads((target / MANIFEST_NAME).read_text()) != manifest:
        atomic_write_json(target / MANIFEST_NAME, manifest)  # same splits, newer build report
    atomic_write_json(layout.dataset_pointer, {"version": version})
    return load_dataset(target)


REBUILD_DATASET = ("materialize `curated_dataset` again (it rebuilds the dataset from the "
                   "annotation snapshot), or restore the file from a backup")


def load_dataset(path: Path) -> CuratedDataset:
    """A dataset from its folder (or its ``dataset.json``)."""
    folder = path.parent if path.name == MANIFEST_NAME else path
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} is not a curated dataset: it has no {MANIFEST_NAME}")
    manifest = read_json(manifest_path, REBUILD_DATASET)
    absent = [name for name in manifest["splits"].values() if not (folder / name).is_file()]
    if absent:
        raise FileNotFoundError(f"curated dataset {folder} lacks its split files {absent}")
    return CuratedDataset(
        root=folder,
        version=manifest["version"],
        image_root=Path(manifest["image_root"]),
        source_snapshot=manifest.get("source_snapshot"),
        fractions=manifest["fractions"],
        counts=manifest["counts"],
        skipped=tuple(SkippedImage(**item) for item in manifest["skipped"]),
    )


def latest_dataset(layout: StateLayout) -> CuratedDataset | None:
    """The dataset ``build_dataset`` wrote or found last, or None before the first build."""
    pointer = layout.dataset_pointer
    if not pointer.is_file():
        return None
    return load_dataset(layout.dataset_folder(read_json(pointer, REBUILD_DATASET)["version"]))


def _usable_images(
    snapshot: AnnotationSnapshot, image_root: Path
) -> tuple[list[tuple[LabeledImage, Path]], list[SkippedImage]]:
    """The snapshot's images that can go into a dataset (with their stored file) and the rest."""
    skipped: list[SkippedImage] = []
    latest: dict[str, LabeledImage] = {}
    for image in snapshot.images:
        if image.sha256 in latest:
            skipped.append(SkippedImage(image.sha256, DUPLICATE_ENTRY, "a later entry is used"))
        latest[image.sha256] = image
    usable: list[tuple[LabeledImage, Path]] = []
    for image in latest.values():
        located = _label_problem(image) or _stored_file(image, image_root)
        if isinstance(located, SkippedImage):
            skipped.append(located)
        else:
            usable.append((image, located))
    return usable, skipped


def _label_problem(image: LabeledImage) -> SkippedImage | None:
    unknown = sorted({box.label for box in image.boxes} - set(CLASS_NAMES))
    if unknown:
        return SkippedImage(image.sha256, UNKNOWN_LABEL, f"labels {unknown} not in {CLASS_NAMES}")
    if image.fixed_split is not None and image.fixed_split not in SPLITS:
        return SkippedImage(image.sha256, UNKNOWN_SPLIT, f"{image.fixed_split!r} not in {SPLITS}")
    if not image.boxes and not image.no_damage:
        return SkippedImage(image.sha256, NOT_LABELED, "no boxes and not marked 'no damage'")
    return None


def _stored_file(image: LabeledImage, image_root: Path) -> SkippedImage | Path:
    """The stored file of the image, or why it cannot be used."""
    path = find_image(image_root, image.sha256)
    if path is None:
        return SkippedImage(image.sha256, MISSING_FROM_STORE, f"not under {image_root}")
    try:
        with Image.open(path) as stored:
            size = stored.size
    except (OSError, UnidentifiedImageError) as error:
        return SkippedImage(image.sha256, UNREADABLE, f"{path}: {error}")
    if size != (image.width, image.height):
        return SkippedImage(
            image.sha256, SIZE_MISMATCH,
            f"labels are for {image.width}x{image.height}, {path} is {size[0]}x{size[1]}",
        )
    return path


def _coco_split(name: str, images: list[tuple[LabeledImage, Path]], image_root: Path) -> dict:
    coco_images, annotations = [], []
    for image_id, (image, path) in enumerate(sorted(images, key=lambda item: item[0].sha256), 1):
        coco_images.append({
            "id": image_id,
            "file_name": path.relative_to(image_root).as_posix(),
            "width": image.width,
            "height": image.height,
            "sha256": image.sha256,
            "group": image.group,
        })
        for box in sorted(image.boxes, key=lambda box: (box.label, box.bbox)):
            x, y, width, height = (round(float(value), 2) for value in box.bbox)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": CATEGORY_ID_BY_NAME[box.label],
                "bbox": [x, y, width, height],
                "area": round(width * height, 2),
                "iscrowd": 0,
            })
    return {
        "info": {"description": f"carsdepo curated dataset, {name} split"},
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": coco_categories(),
    }


def _write_folder(target: Path, cocos: dict[str, dict], manifest: dict) -> None:
    """Write the dataset beside ``target`` and rename it into place in one step."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for name, coco in cocos.items():
            atomic_write_json(staging / f"{name}.json", coco)
        atomic_write_json(staging / MANIFEST_NAME, manifest)
        os.rename(staging, target)
    except OSError:
        if not (target / MANIFEST_NAME).is_file():  # else a concurrent build of it won: fine
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
