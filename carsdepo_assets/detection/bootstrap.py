"""How sure a test-split figure is: percentile-bootstrap bounds over the test images.

A test split of a few dozen photos gives an AP50 that moves by a tenth from one draw of photos
to the next, so a gate on the point estimate decides by chance near its minimum. Here the
test images are resampled with replacement (``resamples`` times, a fixed seed: the same
predictions give the same bounds) and AP50 and the damaged-vs-"None" accuracy are recomputed on
each resample; the lower bound is the ``1 - confidence`` quantile of those values (one-sided).

AP50 follows COCOeval's rules as ``metrics.evaluate_detections`` applies them (the detections
``protocol_detections`` keeps, area range "all"): per image and class, detections highest score
first each take the best-overlapping free ground-truth box at IoU >= 0.5; precision is made
monotone and read at 101 recall points; the overall figure is the mean over classes that have
ground truth. Matching is done once; a resample only re-weights each image's detections and
boxes by how often it was drawn, which gives the same curve as copying the image that many
times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from carsdepo_assets.detection.metrics import MATCH_IOU, box_iou, protocol_detections
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CLASS_NAME_BY_ID, CLASS_NAMES

RECALL_POINTS = np.linspace(0.0, 1.0, 101)
EPSILON = np.spacing(1)  # COCOeval's guard against 0/0 precision
LOWER_BOUND = "_lower_bound"  # metric-name suffix of a bound (``AP50_lower_bound``)


@dataclass(frozen=True)
class Bound:
    """A figure on the whole split and its one-sided lower bound at ``confidence``."""

    estimate: float
    lower: float
    confidence: float
    resamples: int


@dataclass(frozen=True)
class _ClassMatches:
    """One class's detections over the split, highest score first: the image each came from
    and whether it matched a box; and the ground-truth boxes per image."""

    image_index: np.ndarray  # (D,) int
    true_positive: np.ndarray  # (D,) float 0/1
    boxes_per_image: np.ndarray  # (I,) float


def bootstrap_bounds(
    ground_truth: Mapping,
    predictions: Mapping[int, Sequence[Detection]],
    score_threshold: float,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Bound]:
    """``{"AP50": Bound, "none_accuracy": Bound}`` for ``predictions`` (image id -> all
    detections) on the COCO split ``ground_truth``; an image without predictions detected
    nothing. "None" accuracy answers damaged when a detection reaches ``score_threshold``."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence={confidence}: expected a value in [0.5, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be at least 1")
    image_ids = [image["id"] for image in ground_truth["images"]]
    if not image_ids:
        raise ValueError("the split has no images: nothing to bootstrap")
    truths = _truths_by_image(ground_truth, image_ids)
    counts = np.random.default_rng(seed).multinomial(
        len(image_ids), np.full(len(image_ids), 1.0 / len(image_ids)), size=resamples
    ).astype(float)
    whole = np.ones((1, len(image_ids)))
    matches = [_match_class(name, image_ids, truths, predictions) for name in CLASS_NAMES]
    correct = np.array([
        bool(truths[image_id]) == any(d.score >= score_threshold
                                      for d in predictions.get(image_id, ()))
        for image_id in image_ids
    ], dtype=float)
    figures = {
        "AP50": lambda weights: _mean_ap50(matches, weights),
        "none_accuracy": lambda weights: weights @ correct / weights.sum(axis=1),
    }
    bounds = {}
    for name, figure in figures.items():
        estimate = float(figure(whole)[0])
        values = figure(counts)
        values = values[~np.isnan(values)]
        lower = float(np.quantile(values, 1.0 - confidence)) if values.size else float("nan")
        bounds[name] = Bound(estimate, lower, confidence, resamples)
    return bounds


def _truths_by_image(ground_truth: Mapping, image_ids: list[int]) -> dict[int, list]:
    truths: dict[int, list] = {image_id: [] for image_id in image_ids}
    for ann in ground_truth.get("annotations", []):
        if ann.get("iscrowd"):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        truths[ann["image_id"]].append((CLASS_NAME_BY_ID[ann["category_id"]],
                                        (x, y, x + w, y + h)))
    return truths


def _match_class(name: str, image_ids: list[int], truths: Mapping[int, list],
                 predictions: Mapping[int, Sequence[Detection]]) -> _ClassMatches:
    scores, images, hits = [], [], []
    for index, image_id in enumerate(image_ids):
        boxes = [box for label, box in truths[image_id] if label == name]
        found = [d for d in protocol_detections(predictions.get(image_id, ())) if d.label == name]
        free = list(range(len(boxes)))
        for detection in found:
            best, best_iou = None, MATCH_IOU
            for candidate in free:
                overlap = box_iou(detection.box, boxes[candidate])
                if overlap >= best_iou:
                    best, best_iou = candidate, overlap
            if best is not None:
                free.remove(best)
            scores.append(detection.score)
            images.append(index)
            hits.append(best is not None)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    boxes_per_image = np.array([sum(1 for label, _ in truths[image_id] if label == name)
                                for image_id in image_ids], dtype=float)
    return _ClassMatches(np.asarray(images, dtype=int)[order],
                         np.asarray(hits, dtype=float)[order], boxes_per_image)


def _mean_ap50(matches: Sequence[_ClassMatches], weights: np.ndarray) -> np.ndarray:
    """Mean AP50 over the classes with ground truth, per row of image weights (NaN where no
    class has any)."""
    per_class = np.stack([_ap50(match, weights) for match in matches])
    defined = ~np.isnan(per_class)
    total = np.where(defined, per_class, 0.0).sum(axis=0)
    count = defined.sum(axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _ap50(match: _ClassMatches, weights: np.ndarray) -> np.ndarray:
    """COCO's interpolated AP at IoU 0.5 of one class, per row of image weights."""
    positives = weights @ match.boxes_per_image
    ap = np.full(weights.shape[0], np.nan)
    if match.image_index.size == 0:
        return np.where(positives > 0, 0.0, ap)
    drawn = weights[:, match.image_index]
    true_positives = np.cumsum(drawn * match.true_positive, axis=1)
    false_positives = np.cumsum(drawn * (1.0 - match.true_positive), axis=1)
    precision = true_positives / (true_positives + false_positives + EPSILON)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    for row in np.flatnonzero(positives > 0):
        recall = true_positives[row] / positives[row]
        reached = np.searchsorted(recall, RECALL_POINTS, side="left")
        read = np.zeros(RECALL_POINTS.size)
        inside = reached < recall.size
        read[inside] = envelope[row, reached[inside]]
        ap[row] = read.mean()
    return ap
