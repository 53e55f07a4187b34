"""COCO splits as the detector sees them: validated records, resized tensors, augmentation.

A ``CocoSplit`` is a COCO json plus the folder its ``file_name`` entries are relative to — what
curated datasets and the synthetic generator both write. ``load_split`` checks everything that
would otherwise fail (or silently learn nothing) hours into training, and names the file and
the entry at fault. Images with no boxes are kept: they teach the model to answer "None".
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.copy_paste import DamageBank, paste_damage
from carsdepo_assets.taxonomy import (
    CATEGORY_ID_BY_NAME,
    CLASS_NAME_BY_ID,
    CLASS_NAMES,
    coco_categories,
)

# A box may overshoot its image by this much (rounding in annotation tools); more is an error.
EDGE_TOLERANCE_PX = 1.0


class DatasetError(ValueError):
    """A training or validation split that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class CocoSplit:
    """A COCO json whose image ``file_name`` entries are relative to ``image_root``."""

    annotations: Path
    image_root: Path

    @classmethod
    def from_folder(cls, folder: Path) -> CocoSplit:
        """The synthetic generator's layout: ``annotations.json`` beside ``images/``."""
        return cls(Path(folder) / "annotations.json", Path(folder) / "images")


@dataclass(frozen=True)
class ImageRecord:
    """One image with its boxes (x1, y1, x2, y2 pixels) and taxonomy category ids."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # float32, shape (n, 4)
    labels: np.ndarray  # int64, shape (n,)


@dataclass(frozen=True)
class LoadedSplit:
    split: CocoSplit
    records: list[ImageRecord]

    def instances_per_class(self) -> dict[str, int]:
        counts = Counter(int(label) for record in self.records for label in record.labels)
        return {name: counts.get(CATEGORY_ID_BY_NAME[name], 0) for name in CLASS_NAMES}

    @property
    def negatives(self) -> int:
        """Images with no box: their ground truth is "None"."""
        return sum(1 for record in self.records if len(record.labels) == 0)

    def coco_ground_truth(self) -> dict:
        """The split as an in-memory COCO dict with taxonomy category ids (for evaluation)."""
        images, annotations = [], []
        for record in self.records:
            images.append({"id": record.image_id, "file_name": str(record.path),
                           "width": record.width, "height": record.height})
            for (x1, y1, x2, y2), label in zip(record.boxes.tolist(), record.labels.tolist(),
                                               strict=True):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": record.image_id,
                    "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                })
        return {"images": images, "annotations": annotations, "categories": coco_categories()}


def load_split(split: CocoSplit, *, require_every_class: bool) -> LoadedSplit:
    """Read and check a split. Training splits pass ``require_every_class=True``."""
    where = str(split.annotations)
    coco = _read_json(split.annotations)
    images = coco.get("images") or []
    if not images:
        raise DatasetError(f"{where} has no images: there is nothing to train or validate on")
    category_map = _category_map(coco.get("categories") or [], where)
    boxes_by_image: dict[int, list[tuple[list[float], int]]] = {image["id"]: [] for image in images}
    size_by_image = {image["id"]: (image["width"], image["height"]) for image in images}
    for annotation in coco.get("annotations") or []:
        box, label = _checked_annotation(annotation, category_map, size_by_image, where)
        boxes_by_image[annotation["image_id"]].append((box, label))

    records = [_record(image, boxes_by_image[image["id"]], split.image_root) for image in images]
    _check_files(records, split.image_root)
    loaded = LoadedSplit(split, records)
    if require_every_class:
        per_class = loaded.instances_per_class()
        if not any(per_class.values()):
            raise DatasetError(
                f"{where} has no boxes at all (every image is 'None'): a detector needs damage "
                "examples to learn from"
            )
        missing = [name for name, count in per_class.items() if count == 0]
        if missing:
            raise DatasetError(
                f"class(es) {', '.join(missing)} have no instances in {where}: the detector "
                f"cannot learn them (instances per class: {per_class})"
            )
    return loaded


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"COCO annotations file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"COCO annotations file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} is not a COCO object (expected keys images/annotations)")
    return data


def _category_map(categories: list[dict], where: str) -> dict[int, int]:
    """Source category id -> taxonomy id, matched by name so any id numbering works."""
    mapping, unknown = {}, []
    for category in categories:
        name = category.get("name")
        if name in CATEGORY_ID_BY_NAME:
            mapping[category["id"]] = CATEGORY_ID_BY_NAME[name]
        else:
            unknown.append(name)
    if unknown:
        raise DatasetError(
            f"{where} has categories {unknown} outside carsdepo's classes {list(CLASS_NAMES)}; "
            "map them first (carsdepo import-coco --category-map)"
        )
    return mapping


def _checked_annotation(
    annotation: dict, category_map: dict[int, int], size_by_image: dict, where: str
) -> tuple[list[float], int]:
    ident = f"annotation id={annotation.get('id')} in {where}"
    if annotation.get("image_id") not in size_by_image:
        raise DatasetError(f"{ident} refers to image_id={annotation.get('image_id')}, not listed")
    if annotation.get("category_id") not in category_map:
        raise DatasetError(f"{ident} has unknown category_id={annotation.get('category_id')}")
    x, y, w, h = (float(v) for v in annotation["bbox"])
    width, height = size_by_image[annotation["image_id"]]
    if w <= 0 or h <= 0:
        raise DatasetError(f"{ident} has an empty box {annotation['bbox']} (width/height <= 0)")
    x1, y1, x2, y2 = x, y, x + w, y + h
    tol = EDGE_TOLERANCE_PX
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise DatasetError(
            f"{ident} box {annotation['bbox']} lies outside its {width}x{height} image"
        )
    box = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    return box, category_map[annotation["category_id"]]


def _record(image: dict, boxes: list[tuple[list[float], int]], root: Path) -> ImageRecord:
    return ImageRecord(
        image_id=int(image["id"]),
        path=Path(root) / image["file_name"],
        width=int(image["width"]),
        height=int(image["height"]),
        boxes=np.array([box for box, _ in boxes], dtype=np.float32).reshape(-1, 4),
        labels=np.array([label for _, label in boxes], dtype=np.int64),
    )


def _check_files(records: list[ImageRecord], root: Path) -> None:
    """Every image exists and has the size the json claims (header only: no decoding)."""
    missing, wrong_size = [], []
    for record in records:
        try:
            with Image.open(record.path) as image:
                size = image.size
        except FileNotFoundError:
            missing.append(record.path.name)
            continue
        except OSError as error:
            raise DatasetError(f"image {record.path} cannot be read: {error}") from None
        if size != (record.width, record.height):
            wrong_size.append(f"{record.path.name} is {size[0]}x{size[1]}, "
                              f"json says {record.width}x{record.height}")
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) missing under {root}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    if wrong_size:
        raise DatasetError(
            f"image sizes disagree with the annotations: {'; '.join(wrong_size[:5])}"
        )


def boxes_as_trained(split: LoadedSplit, config: DetectorConfig) -> dict[str, np.ndarray]:
    """Every box of the split per class name, (x1, y1, x2, y2) at the scale training shows it
    to the model (what anchors have to fit)."""
    return _boxes_at_model_scale(((r.width, r.height, r.boxes, r.labels) for r in split.records),
                                 config)


def coco_boxes_as_seen(coco: dict, config: DetectorConfig) -> dict[str, np.ndarray]:
    """``boxes_as_trained`` for a COCO dict with taxonomy category ids (e.g. a test split)."""
    by_image: dict[int, list[dict]] = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    items = []
    for image in coco["images"]:
        anns = by_image.get(image["id"], [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                         dtype=np.float64).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        items.append((image["width"], image["height"], boxes, labels))
    return _boxes_at_model_scale(items, config)


def _boxes_at_model_scale(items, config: DetectorConfig) -> dict[str, np.ndarray]:
    per_class: dict[str, list[np.ndarray]] = {name: [] for name in CLASS_NAMES}
    for width, height, boxes, labels in items:
        scale = resize_scale(width, height, config.min_size, config.max_size)
        for box, label in zip(boxes, labels, strict=True):
            if config.work_side:  # as damage_crop reads it
                longest = max(box[2] - box[0], box[3] - box[1])
                scale = min(working_scale(width, height, config.work_side),
                            LARGE_BOX_FILL * config.crop_size / max(longest, 1e-9))
            if int(label) in CLASS_NAME_BY_ID:
                per_class[CLASS_NAME_BY_ID[int(label)]].append(np.asarray(box) * scale)
    return {name: np.array(boxes, dtype=np.float64).reshape(-1, 4)
            for name, boxes in per_class.items()}


def resize_scale(width: int, height: int, min_size: int, max_size: int) -> float:
    """The factor that brings the short side to ``min_size`` without the long one passing
    ``max_size`` (the Faster R-CNN convention)."""
    return min(min_size / min(width, height), max_size / max(width, height))


def image_tensor(image: Image.Image, min_size: int, max_size: int) -> tuple[torch.Tensor, float]:
    """RGB float tensor (C, H, W) in [0, 1] at the model's input size, and the scale applied.

    Resizing here (with Pillow, before the model) keeps large photos cheap: the model never
    sees more pixels than it uses.
    """
    image = image.convert("RGB")
    scale = resize_scale(image.width, image.height, min_size, max_size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return pil_to_tensor(image).float().div_(255.0), scale


@dataclass(frozen=True)
class Augmentation:
    brightness: float
    contrast: float
    hflip: bool

    def apply(
        self, tensor: torch.Tensor, boxes: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.contrast:
            mean = tensor.mean()
            tensor = (tensor - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.brightness:
            tensor = tensor * rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.hflip and rng.random() < 0.5:
            tensor = tensor.flip(-1)
            width = tensor.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                                 boxes[:, 3]], dim=1)
        return tensor.clamp_(0.0, 1.0), boxes


def training_sample(
    record: ImageRecord,
    min_size: int,
    max_size: int,
    augmentation: Augmentation | None,
    rng: np.random.Generator,
    pasting: Pasting | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Decode, resize and augment one image; boxes follow. Empty targets have shape (0, 4)."""
    with Image.open(record.path) as image:
        tensor, scale = image_tensor(image, min_size, max_size)
    return _augmented(tensor, torch.from_numpy(record.boxes * scale),
                      torch.from_numpy(record.labels), scale, augmentation, pasting, rng)


@dataclass(frozen=True)
class Pasting:
    """Copy-paste augmentation (copy_paste.py): up to ``most`` instances from ``bank`` per
    training sample."""

    bank: DamageBank
    most: int


def _augmented(tensor: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scale: float,
               augmentation: Augmentation | None, pasting: Pasting | None,
               rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A training sample's pasted instances first, then the photometric and flip jitter over
    the whole of it."""
    if pasting is not None:
        tensor, boxes, labels = paste_damage(tensor, boxes, labels, scale, pasting.bank,
                                             pasting.most, rng)
    if augmentation is not None:
        tensor, boxes = augmentation.apply(tensor, boxes, rng)
    return tensor, {"boxes": boxes.reshape(-1, 4), "labels": labels}


# A box larger than this share of the crop side is read at a smaller scale (keeps its context).
LARGE_BOX_FILL = 0.6
# A box cut by the crop edge is kept when at least this share of its area is inside the crop.
MIN_VISIBLE_SHARE = 0.3
MIN_VISIBLE_SIDE_PX = 2.0


def working_scale(width: int, height: int, work_side: int) -> float:
    """The factor a photo is read at for native-resolution training and prediction: up to
    ``work_side`` on the long side, never below its own resolution."""
    return max(1.0, work_side / max(width, height))


@dataclass(frozen=True)
class Crop:
    """A window of a photo as the model sees it: ``scale`` x the photo's pixels, top-left at
    ``origin`` (in scaled pixels), ``size`` (width, height) scaled pixels. A point p of the
    crop is p / scale + origin / scale in the photo."""

    scale: float
    origin: tuple[float, float]
    size: tuple[int, int]

    @property
    def photo_window(self) -> tuple[float, float, float, float]:
        """The crop's (x1, y1, x2, y2) in the photo's own pixels."""
        x, y = self.origin
        return (x / self.scale, y / self.scale, (x + self.size[0]) / self.scale,
                (y + self.size[1]) / self.scale)

    def to_crop(self, boxes: np.ndarray) -> np.ndarray:
        """Photo (x1, y1, x2, y2) boxes -> crop pixels (not clipped)."""
        x, y = self.origin
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * self.scale - (x, y, x, y)

    def to_photo(self, boxes: np.ndarray) -> np.ndarray:
        """Crop-pixel boxes -> the photo's pixels."""
        x, y = self.origin
        return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + (x, y, x, y)) / self.scale

    def read(self, image: Image.Image) -> Image.Image:
        """The crop's pixels, resampled from the full-resolution photo in one step."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return rgb.resize(self.size, Image.Resampling.BILINEAR, box=self.photo_window)


def damage_crop(record: ImageRecord, index: int, config: DetectorConfig,
                rng: np.random.Generator) -> Crop:
    """A crop holding box ``index`` of ``record`` whole (when it fits), at a random position
    around it; boxes larger than LARGE_BOX_FILL of the crop are read at a smaller scale."""
    x1, y1, x2, y2 = (float(v) for v in record.boxes[index])
    scale = working_scale(record.width, record.height, config.work_side)
    longest = max(x2 - x1, y2 - y1)
    scale = min(scale, LARGE_BOX_FILL * config.crop_size / longest) if longest > 0 else scale
    size = _crop_size(record, scale, config.crop_size)
    origin = tuple(
        _position(low * scale, high * scale, side, limit * scale, rng)
        for low, high, side, limit in ((x1, x2, size[0], record.width),
                                       (y1, y2, size[1], record.height))
    )
    return Crop(scale, origin, size)


def random_crop(record: ImageRecord, config: DetectorConfig, rng: np.random.Generator) -> Crop:
    """A crop anywhere in the photo, at its working scale (background, or what it holds)."""
    scale = working_scale(record.width, record.height, config.work_side)
    size = _crop_size(record, scale, config.crop_size)
    origin = (float(rng.uniform(0, record.width * scale - size[0])),
              float(rng.uniform(0, record.height * scale - size[1])))
    return Crop(scale, origin, size)


def _crop_size(record: ImageRecord, scale: float, crop_size: int) -> tuple[int, int]:
    return (min(crop_size, int(record.width * scale)), min(crop_size, int(record.height * scale)))


def _position(low: float, high: float, side: int, limit: float,
              rng: np.random.Generator) -> float:
    """A start for a window of ``side`` inside [0, limit] that holds [low, high] when it fits
    (else one that lies within it), uniformly among those."""
    start_min, start_max = (high - side, low) if high - low <= side else (low, high - side)
    start_min, start_max = max(0.0, start_min), min(limit - side, start_max)
    return float(rng.uniform(start_min, start_max)) if start_max > start_min \
        else float(min(max(0.0, start_min), limit - side))


def boxes_in_crop(crop: Crop, boxes: np.ndarray, labels: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The boxes as the crop shows them: clipped to it; a box is dropped when less than
    MIN_VISIBLE_SHARE of it, or a sliver under MIN_VISIBLE_SIDE_PX, is inside."""
    inside = crop.to_crop(boxes)
    full_area = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    width, height = crop.size
    clipped = np.stack([inside[:, 0].clip(0, width), inside[:, 1].clip(0, height),
                        inside[:, 2].clip(0, width), inside[:, 3].clip(0, height)], axis=1)
    sides = np.stack([clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]], axis=1)
    visible = sides.prod(axis=1)
    keep = (sides.min(axis=1) >= MIN_VISIBLE_SIDE_PX) & \
        (visible >= MIN_VISIBLE_SHARE * np.maximum(full_area, 1e-9))
    return clipped[keep].astype(np.float32), np.asarray(labels)[keep]


def crop_sample(
    record: ImageRecord,
    config: DetectorConfig,
    augmentation: Augmentation | None,
    rng: np.random.Generator,
    pasting: Pasting | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A native-resolution training sample: a damage-centred crop (a random box of the photo)
    or, for ``background_crops`` of the samples and for photos without boxes, a random one."""
    if len(record.boxes) and rng.random() >= config.background_crops:
        crop = damage_crop(record, int(rng.integers(len(record.boxes))), config, rng)
    else:
        crop = random_crop(record, config, rng)
    with Image.open(record.path) as image:
        tensor = pil_to_tensor(crop.read(image)).float().div_(255.0)
    boxes, labels = boxes_in_crop(crop, record.boxes, record.labels)
    return _augmented(tensor, torch.from_numpy(boxes), torch.from_numpy(labels), crop.scale,
                      augmentation, pasting, rng)


def repeat_factors(records: list[ImageRecord], threshold: float) -> np.ndarray:
    """LVIS repeat factors: r(class) = max(1, sqrt(threshold / share of images with the
    class)), an image's factor the largest of its classes' (1 for images without boxes)."""
    factors = np.ones(len(records))
    if threshold <= 0 or not records:
        return factors
    images_with = Counter(int(label) for record in records for label in set(record.labels))
    per_class = {label: max(1.0, math.sqrt(threshold / (count / len(records))))
                 for label, count in images_with.items()}
    for index, record in enumerate(records):
        if len(record.labels):
            factors[index] = max(per_class[int(label)] for label in record.labels)
    return factors
