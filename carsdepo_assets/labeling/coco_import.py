"""Photos someone already labelled (COCO): fold their classes into carsdepo's, and bring them
into Label Studio as completed, imported annotations that annotators can review.

Rules:

- A category map sends each source category to ``scratch``, ``dent`` or nothing (``null``).
  Its keys are category names or shell patterns (``*-scratch``). The first matching key wins.
  A category no key matches is dropped. The built-in map fits carsdepo's own COCO files and
  the lensor data set: ``scratch``, ``dent``, ``*-scratch`` -> scratch, ``*-dent`` -> dent.
- Boxes of dropped categories are counted per category. Boxes without area are counted as
  invalid.
- An image with no box at all is a negative ("no damage").
- An image whose boxes were all dropped or invalid is not a negative, since it shows damage of
  another kind. It is excluded and counted.
- Group key: the file name before ``.rf.`` (Roboflow's augmented copies of one source photo),
  else the file's stem. Splits keep every copy of one photo together.
- ``keep_split`` pins every image of the file to a published split (``train``/``val``/``test``),
  so that results stay comparable with others who used that split.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.images.manifest import DUPLICATE, STORED, BatchManifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.results import SOURCE_IMPORTED, SPLITS, annotation_result
from carsdepo_assets.labeling.snapshot import LabeledBox
from carsdepo_assets.labeling.tasks import LabelingBackend, match_manifest_rows, task_data
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import CLASS_NAMES, DENT, SCRATCH

ROBOFLOW_MARK = ".rf."


class CocoImportError(ValueError):
    """The COCO file or the category map cannot be used; the message names the file and item."""


@dataclass(frozen=True)
class CategoryMap:
    """(pattern, target class or None) rules; the first pattern matching a name decides."""

    rules: tuple[tuple[str, str | None], ...]

    def target(self, category_name: str) -> str | None:
        for pattern, target in self.rules:
            if fnmatch.fnmatchcase(category_name, pattern):
                return target
        return None


DEFAULT_CATEGORY_MAP = CategoryMap((
    (SCRATCH, SCRATCH), (DENT, DENT), (f"*-{SCRATCH}", SCRATCH), (f"*-{DENT}", DENT),
))


def load_category_map(path: Path) -> CategoryMap:
    """A JSON or YAML mapping ``source name or pattern -> scratch | dent | null``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise CocoImportError(f"category map {path}: cannot read it ({error.strerror})") from error
    try:
        payload = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise CocoImportError(f"category map {path}: not valid JSON/YAML ({error})") from error
    if not isinstance(payload, Mapping) or not payload:
        raise CocoImportError(
            f"category map {path}: expected a mapping of source category -> scratch|dent|null"
        )
    rules = []
    for key, target in payload.items():
        if target is not None and target not in CLASS_NAMES:
            raise CocoImportError(
                f"category map {path}: {key!r} maps to {target!r}; use one of "
                f"{', '.join(CLASS_NAMES)} or null"
            )
        rules.append((str(key), target))
    return CategoryMap(tuple(rules))


def group_key(file_name: str) -> str:
    """The source photo behind a file: the name before ``.rf.``, else the stem."""
    name = PurePosixPath(file_name.replace("\\", "/")).name
    if ROBOFLOW_MARK in name:
        return name.split(ROBOFLOW_MARK, 1)[0]
    return PurePosixPath(name).stem


@dataclass(frozen=True)
class CocoImage:
    file_name: str
    width: int
    height: int
    boxes: tuple[LabeledBox, ...]
    group: str
    dropped_boxes: int = 0  # boxes of categories the map drops, or without area

    @property
    def negative(self) -> bool:
        return not self.boxes and not self.dropped_boxes

    @property
    def excluded(self) -> bool:
        """Only boxes of other kinds: damage, but not ours. Neither labelled nor negative."""
        return not self.boxes and self.dropped_boxes > 0


@dataclass
class ParsedCoco:
    path: Path
    images: list[CocoImage]
    split: str | None = None
    dropped_by_category: Counter = field(default_factory=Counter)
    invalid_boxes: int = 0

    @property
    def boxes_by_class(self) -> dict[str, int]:
        counted = Counter(box.label for image in self.images for box in image.boxes)
        return {name: counted.get(name, 0) for name in CLASS_NAMES}

    @property
    def negatives(self) -> int:
        return sum(image.negative for image in self.images)

    @property
    def excluded(self) -> list[str]:
        return [image.file_name for image in self.images if image.excluded]


def parse_coco(
    path: Path, category_map: CategoryMap | None = None, keep_split: str | None = None
) -> ParsedCoco:
    """Read a COCO detection file into per-image carsdepo boxes (see the module's rules)."""
    path = Path(path)
    category_map = category_map or DEFAULT_CATEGORY_MAP
    if keep_split is not None and keep_split not in SPLITS:
        raise CocoImportError(f"--keep-splits {keep_split!r}: use one of {', '.join(SPLITS)}")
    try:
        coco = json.loads(path.read_text())
    except OSError as error:
        raise CocoImportError(f"COCO file {path}: cannot read it ({error.strerror})") from error
    except ValueError as error:
        raise CocoImportError(f"COCO file {path}: not valid JSON ({error})") from error
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise CocoImportError(f"COCO file {path}: no 'images' list")
    categories = {c["id"]: c["name"] for c in coco.get("categories") or []}
    parsed = ParsedCoco(path=path, images=[], split=keep_split)

    boxes: dict[int, list[LabeledBox]] = {}
    dropped: Counter = Counter()
    for index, annotation in enumerate(coco.get("annotations") or []):
        where = f"COCO file {path}: annotation #{index} (id {annotation.get('id')})"
        image_id = annotation.get("image_id")
        name = categories.get(annotation.get("category_id"))
        if name is None:
            raise CocoImportError(f"{where}: unknown category_id {annotation.get('category_id')}")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, int | float) for v in bbox)):
            raise CocoImportError(f"{where}: bbox {bbox!r} is not [x, y, width, height]")
        target = category_map.target(name)
        if target is None:
            parsed.dropped_by_category[name] += 1
            dropped[image_id] += 1
        elif bbox[2] <= 0 or bbox[3] <= 0:
            parsed.invalid_boxes += 1
            dropped[image_id] += 1
        else:
            boxes.setdefault(image_id, []).append(
                LabeledBox(target, tuple(float(v) for v in bbox))
            )

    for index, image in enumerate(coco["images"]):
        try:
            file_name, width, height = image["file_name"], int(image["width"]), int(image["height"])
            image_id = image["id"]
        except (KeyError, TypeError, ValueError) as error:
            raise CocoImportError(
                f"COCO file {path}: image #{index} lacks a valid id/file_name/width/height "
                f"({error!r})"
            ) from error
        parsed.images.append(CocoImage(
            file_name=file_name, width=width, height=height,
            boxes=tuple(boxes.get(image_id, ())), group=group_key(file_name),
            dropped_boxes=dropped.get(image_id, 0),
        ))
    known = {image["id"] for image in coco["images"]}
    orphans = (set(boxes) | set(dropped)) - known
    if orphans:
        raise CocoImportError(
            f"COCO file {path}: annotations refer to missing image ids {sorted(orphans)[:10]}"
        )
    return parsed


@dataclass
class CocoImportReport:
    """What ``import_coco_annotations`` did; every COCO image is in exactly one count."""

    batch: str
    file_images: int = 0
    file_boxes_by_class: dict[str, int] = field(default_factory=dict)
    tasks_created: int = 0
    tasks_existing: int = 0
    tasks_updated: int = 0
    annotations_created: int = 0
    already_annotated: int = 0
    negatives: int = 0
    boxes_by_class: dict[str, int] = field(default_factory=dict)
    dropped_by_category: dict[str, int] = field(default_factory=dict)
    invalid_boxes: int = 0
    excluded: list[str] = field(default_factory=list)  # only boxes of dropped classes
    not_stored: dict[str, str] = field(default_factory=dict)  # file name -> why
    size_mismatch: list[str] = field(default_factory=list)
    same_image_as: dict[str, str] = field(default_factory=dict)  # file name -> first copy

    def summary(self) -> dict:
        return {
            "batch": self.batch,
            "in_file": {"images": self.file_images, "boxes_by_class": self.file_boxes_by_class},
            "tasks": {"created": self.tasks_created, "existing": self.tasks_existing,
                      "updated": self.tasks_updated},
            "annotations": {"created": self.annotations_created,
                            "already_annotated": self.already_annotated},
            "negatives": self.negatives,
            "boxes_by_class": self.boxes_by_class,
            "dropped_by_category": self.dropped_by_category,
            "invalid_boxes": self.invalid_boxes,
            "excluded_images": len(self.excluded),
            "not_stored": self.not_stored,
            "size_mismatch": self.size_mismatch,
            "same_image_as": self.same_image_as,
        }


def import_coco_annotations(
    backend: LabelingBackend, layout: StateLayout, manifest: BatchManifest, parsed: ParsedCoco,
    progress: Callable[[int, int], None] | None = None,
) -> CocoImportReport:
    """Create tasks and imported annotations for an ingested batch; idempotent.

    The COCO file names join the batch manifest (see ``match_manifest_rows``). A task that
    exists already gets the import's group/split/source added to its data. A task that has any
    annotation (imported or human) gets no new one. ``progress(done, total)`` is called per task
    (one request each: thousands of photos take minutes).
    """
    report = CocoImportReport(
        batch=manifest.batch, file_images=len(parsed.images),
        file_boxes_by_class=parsed.boxes_by_class,
        dropped_by_category=dict(parsed.dropped_by_category),
        invalid_boxes=parsed.invalid_boxes, excluded=parsed.excluded,
    )
    rows = match_manifest_rows(manifest, [image.file_name for image in parsed.images])
    chosen: dict[str, tuple] = {}  # sha256 -> (image, row, task data)
    store = ImageStore(layout.images)
    root = backend.document_root(layout.images)
    for image in parsed.images:
        if image.excluded:
            continue
        row = rows.get(image.file_name)
        if row is None or row.status not in (STORED, DUPLICATE):
            report.not_stored[image.file_name] = (
                "not in the batch manifest" if row is None
                else f"{row.status}: {row.reason or 'no reason recorded'}"
            )
            continue
        if (row.width, row.height) != (image.width, image.height):
            report.size_mismatch.append(image.file_name)
            continue
        if row.sha256 in chosen:
            report.same_image_as[image.file_name] = chosen[row.sha256][0].file_name
            continue
        extra = {"source": SOURCE_IMPORTED, "group": image.group, "split": parsed.split}
        data = task_data(row, manifest.batch, store.path_for(row.sha256), root, extra)
        chosen[row.sha256] = (image, row, data)

    imported = backend.import_tasks([data for _, _, data in chosen.values()], layout.images)
    report.tasks_created, report.tasks_existing = len(imported.created), len(imported.existing)
    tasks = {task.id: task for task in backend.list_tasks()}
    counted: Counter = Counter()
    for done, (sha, task_id) in enumerate(imported.task_ids.items(), start=1):
        if progress:
            progress(done, len(imported.task_ids))
        image, row, data = chosen[sha]
        task = tasks[task_id]
        merged = {**task.data, **{k: data[k] for k in ("source", "group", "split") if k in data}}
        if merged != task.data:
            backend.update_task_data(task_id, merged)
            report.tasks_updated += 1
        if task.annotations:
            report.already_annotated += 1
            continue
        backend.submit_annotation(
            task_id, annotation_result(image.boxes, row.width, row.height), imported=True
        )
        report.annotations_created += 1
        report.negatives += image.negative
        counted.update(box.label for box in image.boxes)
    report.boxes_by_class = {name: counted.get(name, 0) for name in CLASS_NAMES}
    return report


def import_coco_batch(
    backend: LabelingBackend, layout: StateLayout, batch: str, annotations_path: Path,
    category_map_path: Path | None = None, keep_split: str | None = None,
) -> CocoImportReport:
    """``carsdepo import-coco``, after the images were ingested as ``batch``."""
    category_map = load_category_map(category_map_path) if category_map_path else None
    parsed = parse_coco(annotations_path, category_map, keep_split)
    return import_coco_annotations(backend, layout, load_manifest(layout, batch), parsed)
