"""How good a detector is on a labelled COCO split: the numbers every report and gate uses.

Box AP follows the COCO protocol with pycocotools' COCOeval (the reference everybody publishes
against): it ranks every detection down to a score of ``COCO_SCORE_FLOOR``, at most
``COCO_MAX_DETECTIONS`` per image, whatever threshold the model is deployed with; a detector
asked for fewer (a higher floor, a shorter list) under-reports its weak classes. Besides the
per-class AP there is a class-agnostic "damage" AP (any damage box found, whichever class) and
AP50 per object size. The operating-point figures (precision/recall/F1, the image-level
damaged-vs-"None" answer, the scratch/dent confusion, what became of each ground-truth box, the
worst images) are computed at IoU 0.5 with greedy matching by score, on the detections at or
above the score threshold the model will be deployed with. A metric that cannot be computed (a
class without ground truth, no predictions to measure precision on) is ``None`` and shows as
"n/a" instead of a misleading 0. Rendering (markdown, PNG plots) is in ``report.py``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import (
    CATEGORY_ID_BY_NAME,
    CLASS_NAME_BY_ID,
    CLASS_NAMES,
    coco_categories,
)

MATCH_IOU = 0.5
# The COCO protocol: every detection down to this score, at most this many per image.
COCO_SCORE_FLOOR = 0.001
COCO_MAX_DETECTIONS = 100
# A detection of the right class overlapping a missed box at least this much (but under
# MATCH_IOU) found it "badly localised" (the background threshold of the TIDE error analysis).
LOCALISATION_IOU = 0.1
SIZES: tuple[str, ...] = ("small", "medium", "large")  # COCO's area ranges after "all"
BACKGROUND = "background"
CONFUSION_LABELS: tuple[str, ...] = (*CLASS_NAMES, BACKGROUND)
# Names of COCOeval.stats[0:6], in order.
COCO_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
Box = tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class MatchCounts:
    """True/false positives and misses at IoU 0.5; the ratios are None when undefined."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class BoxOutcomes:
    """What became of a class's ground-truth boxes at the operating threshold: found (a
    detection of the class at IoU >= 0.5), else found as the other class (IoU >= 0.5), else
    badly localised (a detection of the class at LOCALISATION_IOU <= IoU < 0.5), else missed."""

    found: int = 0
    other_class: int = 0
    badly_localised: int = 0
    missed: int = 0

    def __add__(self, other: BoxOutcomes) -> BoxOutcomes:
        return BoxOutcomes(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    gt_boxes: int
    ap: float | None
    ap50: float | None
    counts: MatchCounts
    ap50_by_size: dict[str, float | None] = field(default_factory=dict)  # SIZES -> AP50
    outcomes: BoxOutcomes = field(default_factory=BoxOutcomes)


@dataclass(frozen=True)
class AnswerCounts:
    """Image-level answers: an image is damaged when it has a ground-truth box, answered damaged
    when any detection reaches the threshold, else answered "None"."""

    damaged_answered_damaged: int = 0
    damaged_answered_none: int = 0
    clean_answered_damaged: int = 0
    clean_answered_none: int = 0

    @property
    def accuracy(self) -> float | None:
        right = self.damaged_answered_damaged + self.clean_answered_none
        wrong = self.damaged_answered_none + self.clean_answered_damaged
        return _ratio(right, right + wrong)


@dataclass(frozen=True)
class ImageErrors:
    image_id: int
    file_name: str
    tp: int
    fp: int
    fn: int

    @property
    def errors(self) -> int:
        return self.fp + self.fn


@dataclass(frozen=True)
class EvaluationResult:
    score_threshold: float
    images: int
    coco: dict[str, float | None]  # COCO_STAT_NAMES -> value
    damage: dict[str, float | None]  # class-agnostic "damage": AP and AP50
    classes: dict[str, ClassMetrics]  # by class name, in CLASS_NAMES order
    answers: AnswerCounts
    confusion: dict[str, dict[str, int]]  # ground truth -> predicted, over CONFUSION_LABELS
    recall_thresholds: list[float]
    pr_curves: dict[str, list[float] | None]  # precision at each recall threshold, IoU 0.5
    worst_images: list[ImageErrors] = field(default_factory=list)

    @property
    def overall(self) -> MatchCounts:
        """Counts summed over classes (micro average)."""
        return sum((c.counts for c in self.classes.values()), MatchCounts())

    @property
    def none_accuracy(self) -> float | None:
        return self.answers.accuracy

    def to_dict(self) -> dict:
        return {
            "score_threshold": self.score_threshold,
            "iou_threshold": MATCH_IOU,
            "protocol": {"score_floor": COCO_SCORE_FLOOR, "max_detections": COCO_MAX_DETECTIONS},
            "images": self.images,
            "coco": dict(self.coco),
            "damage": dict(self.damage),
            "classes": {
                name: {
                    "gt_boxes": c.gt_boxes, "ap": c.ap, "ap50": c.ap50,
                    "ap50_by_size": dict(c.ap50_by_size), "outcomes": asdict(c.outcomes),
                    **c.counts.to_dict(),
                }
                for name, c in self.classes.items()
            },
            "overall": self.overall.to_dict(),
            "answers": {**asdict(self.answers), "accuracy": self.answers.accuracy},
            "confusion": self.confusion,
            "recall_thresholds": self.recall_thresholds,
            "pr_curves": self.pr_curves,
            "worst_images": [{**asdict(w), "errors": w.errors} for w in self.worst_images],
        }

    def flat_metrics(self) -> dict[str, float]:
        """Defined metrics by name, for MLflow and the quality gate (undefined ones are left out,
        so that a gate asking for them fails by name instead of comparing a NaN)."""
        overall = self.overall
        values: dict[str, float | None] = {
            **self.coco,
            **{f"damage_{name}": value for name, value in self.damage.items()},
            "precision": overall.precision,
            "recall": overall.recall,
            "f1": overall.f1,
            "none_accuracy": self.none_accuracy,
        }
        for name, c in self.classes.items():
            values.update({
                f"AP_{name}": c.ap,
                f"AP50_{name}": c.ap50,
                f"precision_{name}": c.counts.precision,
                f"recall_{name}": c.counts.recall,
                f"f1_{name}": c.counts.f1,
            })
        return {name: float(value) for name, value in values.items() if value is not None}


def evaluate_detections(
    ground_truth: str | Path | Mapping,
    predictions: Mapping[int, Sequence[Detection]],
    score_threshold: float,
    worst: int = 5,
) -> EvaluationResult:
    """Evaluate ``predictions`` (image id -> detections, all scores) against a COCO split.

    ``ground_truth`` is a COCO JSON path or the parsed dict. Images without an entry in
    ``predictions`` count as "nothing detected". Of each image's detections the best
    ``COCO_MAX_DETECTIONS`` at or above ``COCO_SCORE_FLOOR`` are evaluated (the COCO protocol);
    ``score_threshold`` is the operating point, used only for the figures a deployed model is
    judged by (precision, recall, answers, confusion, box outcomes). Raises ValueError naming
    the offending item for predictions on unknown images, unknown labels or unknown GT
    categories.
    """
    gt = normalised_ground_truth(ground_truth)
    images = {image["id"]: image for image in gt["images"]}
    unknown = sorted(set(predictions) - set(images), key=str)
    if unknown:
        raise ValueError(f"predictions for image ids not in the ground truth: {unknown[:10]}")
    for image_id, detections in predictions.items():
        for detection in detections:
            if detection.label not in CLASS_NAMES:
                raise ValueError(
                    f"image {image_id}: detection label {detection.label!r} is not one of "
                    f"{list(CLASS_NAMES)}"
                )
    ranked = {image_id: protocol_detections(detections)
              for image_id, detections in predictions.items()}
    gt_by_image: dict[int, list[tuple[str, Box]]] = {i: [] for i in images}
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            gt_by_image[ann["image_id"]].append((CLASS_NAME_BY_ID[ann["category_id"]],
                                                 xyxy(ann["bbox"])))
    per_class = _coco_eval(gt, ranked)
    damage = _class_agnostic_eval(gt, ranked)

    class_counts = {name: MatchCounts() for name in CLASS_NAMES}
    outcomes = {name: BoxOutcomes() for name in CLASS_NAMES}
    answers = AnswerCounts()
    confusion = {truth: dict.fromkeys(CONFUSION_LABELS, 0) for truth in CONFUSION_LABELS}
    per_image: list[ImageErrors] = []
    for image_id, truths in gt_by_image.items():
        kept = [d for d in ranked.get(image_id, ()) if d.score >= score_threshold]
        image_counts = MatchCounts()
        for name in CLASS_NAMES:
            own = [t[1] for t in truths if t[0] == name]
            found = _match_one_class(own, [d.box for d in kept if d.label == name])
            counts = MatchCounts(tp=len(found), fp=sum(d.label == name for d in kept) - len(found),
                                 fn=len(own) - len(found))
            class_counts[name] += counts
            image_counts += counts
            outcomes[name] += _box_outcomes(own, found, name, kept)
        _add_confusion(confusion, truths, kept)
        answers = _add_answer(answers, damaged=bool(truths), answered_damaged=bool(kept))
        per_image.append(ImageErrors(image_id, images[image_id].get("file_name", str(image_id)),
                                     image_counts.tp, image_counts.fp, image_counts.fn))

    gt_boxes = {name: sum(1 for ts in gt_by_image.values() for t in ts if t[0] == name)
                for name in CLASS_NAMES}
    worst_images = sorted((e for e in per_image if e.errors),
                          key=lambda e: (-e.errors, str(e.image_id)))[:worst]
    return EvaluationResult(
        score_threshold=score_threshold,
        images=len(images),
        coco=per_class.stats,
        damage=damage,
        classes={
            name: ClassMetrics(name, gt_boxes[name], *per_class.ap[name], class_counts[name],
                               per_class.ap50_by_size[name], outcomes[name])
            for name in CLASS_NAMES
        },
        answers=answers,
        confusion=confusion,
        recall_thresholds=per_class.recall_thresholds,
        pr_curves=per_class.curves,
        worst_images=worst_images,
    )


def protocol_detections(detections: Sequence[Detection]) -> list[Detection]:
    """The detections the COCO protocol ranks: best first, score >= ``COCO_SCORE_FLOOR``, at
    most ``COCO_MAX_DETECTIONS``."""
    ranked = sorted((d for d in detections if d.score >= COCO_SCORE_FLOOR),
                    key=lambda d: -d.score)
    return ranked[:COCO_MAX_DETECTIONS]


def normalised_ground_truth(ground_truth: str | Path | Mapping) -> dict:
    """A deep copy with the fields COCOeval needs (area, iscrowd, categories), checked."""
    if isinstance(ground_truth, str | Path):
        source = str(ground_truth)
        try:
            gt = json.loads(Path(ground_truth).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read COCO ground truth {source}: {error}") from error
    else:
        source = "the ground-truth dict"
        gt = copy.deepcopy(dict(ground_truth))
    if not isinstance(gt.get("images"), list):
        raise ValueError(f"{source} has no 'images' list; is it a COCO file?")
    image_ids = {image["id"] for image in gt["images"]}
    annotations = gt.setdefault("annotations", [])
    for index, ann in enumerate(annotations):
        where = f"{source}: annotation {ann.get('id', index)}"
        if ann.get("category_id") not in CLASS_NAME_BY_ID:
            raise ValueError(f"{where} has category_id {ann.get('category_id')!r}; expected one of "
                             f"{CLASS_NAME_BY_ID}")
        if ann.get("image_id") not in image_ids:
            raise ValueError(f"{where} refers to image {ann.get('image_id')!r}, not in 'images'")
        ann.setdefault("id", index + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    gt["categories"] = coco_categories()
    return gt


@dataclass(frozen=True)
class _PerClassEval:
    stats: dict[str, float | None]  # COCO_STAT_NAMES -> value
    ap: dict[str, tuple[float | None, float | None]]  # class -> (AP, AP50)
    ap50_by_size: dict[str, dict[str, float | None]]  # class -> SIZES -> AP50
    recall_thresholds: list[float]
    curves: dict[str, list[float] | None]  # class -> precision at each recall point, IoU 0.5


def _coco_eval(gt: dict, predictions: Mapping[int, Sequence[Detection]]) -> _PerClassEval:
    """COCOeval (bbox) per class: the summary stats, per-class AP/AP50 (also by size) and the
    precision-recall curves at IoU 0.5."""
    evaluator = _run_cocoeval(gt, predictions, use_categories=True)
    stats = {name: _defined(evaluator.stats[i]) for i, name in enumerate(COCO_STAT_NAMES)}
    # precision[T, R, K, A, M]: IoU thresholds x recall points x classes x area ranges x maxDets;
    # area range 0 is "all", then SIZES; maxDets -1 is COCO_MAX_DETECTIONS.
    precision = evaluator.eval["precision"][..., -1]
    iou_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - MATCH_IOU)))
    ap, by_size, curves = {}, {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = CLASS_NAME_BY_ID[cat_id]
        curve = precision[iou_50, :, k, 0]
        ap[name] = (_mean_defined(precision[:, :, k, 0]), _mean_defined(curve))
        by_size[name] = {size: _mean_defined(precision[iou_50, :, k, index])
                         for index, size in enumerate(SIZES, start=1)}
        curves[name] = [float(v) for v in curve] if (curve > -1).any() else None
    return _PerClassEval(stats, ap, by_size, [float(r) for r in evaluator.params.recThrs], curves)


def _class_agnostic_eval(gt: dict, predictions: Mapping[int, Sequence[Detection]]) -> dict:
    """AP and AP50 of "damage": every box one class (COCOeval with ``useCats`` off), so a dent
    found as a scratch still counts as found."""
    evaluator = _run_cocoeval(gt, predictions, use_categories=False)
    return {"AP": _defined(evaluator.stats[0]), "AP50": _defined(evaluator.stats[1])}


def _run_cocoeval(gt: dict, predictions: Mapping[int, Sequence[Detection]],
                  use_categories: bool) -> COCOeval:
    results = []
    for image_id, detections in predictions.items():
        for d in detections:
            x, y, w, h = _xywh(d.box)
            results.append({"id": len(results) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                            "category_id": CATEGORY_ID_BY_NAME[d.label], "area": w * h,
                            "score": float(d.score), "iscrowd": 0})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = _coco(gt)
        coco_dt = _coco({"images": gt["images"], "categories": gt["categories"],
                         "annotations": results})
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.useCats = int(use_categories)
        evaluator.params.maxDets = [1, 10, COCO_MAX_DETECTIONS]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def greedy_match(truths: Sequence[Box], boxes: Sequence[Box]) -> list[int | None]:
    """Greedy matching of one class in one image: each box (highest score first) takes the free
    truth it overlaps most at IoU >= ``MATCH_IOU``; the truth's index per box, None if none."""
    free = list(range(len(truths)))
    matches: list[int | None] = []
    for box in boxes:
        best = _best_match(box, truths, free)
        if best is not None:
            free.remove(best)
        matches.append(best)
    return matches


def _match_one_class(truths: list[Box], boxes: list[Box]) -> set[int]:
    """The indices of the truths found (``greedy_match``)."""
    return {match for match in greedy_match(truths, boxes) if match is not None}


def _box_outcomes(truths: list[Box], found: set[int], name: str,
                  kept: list[Detection]) -> BoxOutcomes:
    """Sort the truths not found into the three ways of not finding a box (see BoxOutcomes)."""
    other_class = badly_localised = missed = 0
    for index, truth in enumerate(truths):
        if index in found:
            continue
        overlaps = [(d.label == name, box_iou(d.box, truth)) for d in kept]
        if any(not same and iou >= MATCH_IOU for same, iou in overlaps):
            other_class += 1
        elif any(same and iou >= LOCALISATION_IOU for same, iou in overlaps):
            badly_localised += 1
        else:
            missed += 1
    return BoxOutcomes(len(found), other_class, badly_localised, missed)


def _add_confusion(confusion: dict, truths: list[tuple[str, Box]],
                   kept: list[Detection]) -> None:
    """Class-agnostic matching: a matched pair counts truth x predicted label; unmatched
    detections are background false positives, unmatched truths are missed (background)."""
    free = list(range(len(truths)))
    boxes = [t[1] for t in truths]
    for detection in kept:
        best = _best_match(detection.box, boxes, free)
        if best is None:
            confusion[BACKGROUND][detection.label] += 1
        else:
            free.remove(best)
            confusion[truths[best][0]][detection.label] += 1
    for index in free:
        confusion[truths[index][0]][BACKGROUND] += 1


def _best_match(box, truths, free: list[int]) -> int | None:
    best, best_iou = None, MATCH_IOU
    for index in free:
        overlap = box_iou(box, truths[index])
        if overlap >= best_iou:
            best, best_iou = index, overlap
    return best


def _add_answer(answers: AnswerCounts, damaged: bool, answered_damaged: bool) -> AnswerCounts:
    key = ("damaged" if damaged else "clean") + ("_answered_damaged" if answered_damaged
                                                  else "_answered_none")
    return AnswerCounts(**{**asdict(answers), key: getattr(answers, key) + 1})


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes, as COCO computes it."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def xyxy(bbox: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _defined(value: float) -> float | None:
    """COCOeval reports -1 for "nothing to measure"."""
    value = float(value)
    return None if value < 0 or math.isnan(value) else value


def _mean_defined(values: np.ndarray) -> float | None:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None
