"""How good a detector is on a labelled COCO split: the numbers every report and gate uses.

Box AP comes from pycocotools' COCOeval (the reference everybody publishes against). The
operating-point figures (precision/recall/F1, the image-level damaged-vs-"None" answer, the
scratch/dent confusion, the worst images) are computed here at IoU 0.5 with greedy matching by
score, on the detections at or above the score threshold the model will be deployed with.
A metric that cannot be computed (a class without ground truth, no predictions to measure
precision on) is ``None`` and shows as "n/a" instead of a misleading 0.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import (
    CATEGORY_ID_BY_NAME,
    CLASS_NAME_BY_ID,
    CLASS_NAMES,
    coco_categories,
)
from carsdepo_assets.visual import contact_sheet, draw_boxes, png_bytes

MATCH_IOU = 0.5
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
class ClassMetrics:
    name: str
    gt_boxes: int
    ap: float | None
    ap50: float | None
    counts: MatchCounts


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
            "images": self.images,
            "coco": dict(self.coco),
            "classes": {
                name: {
                    "gt_boxes": c.gt_boxes, "ap": c.ap, "ap50": c.ap50, **c.counts.to_dict()
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

    def markdown_table(self) -> str:
        """The report as markdown: headline numbers, per class, answers, confusion, worst images."""
        overall = self.overall
        lines = [
            f"**{self.images} images, score threshold {self.score_threshold:g}, "
            f"matching at IoU {MATCH_IOU:g}**",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {_fmt(self.coco[name])} |" for name in COCO_STAT_NAMES),
            f"| precision | {_fmt(overall.precision)} |",
            f"| recall | {_fmt(overall.recall)} |",
            f"| F1 | {_fmt(overall.f1)} |",
            f'| damaged-vs-"None" accuracy | {_fmt(self.none_accuracy)} |',
            "",
            "| class | GT boxes | AP | AP50 | precision | recall | F1 | TP | FP | FN |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, c in self.classes.items():
            k = c.counts
            lines.append(
                f"| {name} | {c.gt_boxes} | {_fmt(c.ap)} | {_fmt(c.ap50)} | {_fmt(k.precision)} "
                f"| {_fmt(k.recall)} | {_fmt(k.f1)} | {k.tp} | {k.fp} | {k.fn} |"
            )
        a = self.answers
        lines += [
            "",
            '| image truth \\ answer | damaged | "None" |',
            "|---|---|---|",
            f"| damaged | {a.damaged_answered_damaged} | {a.damaged_answered_none} |",
            f"| clean | {a.clean_answered_damaged} | {a.clean_answered_none} |",
            "",
            "| truth \\ predicted | " + " | ".join(CONFUSION_LABELS) + " |",
            "|---" * (len(CONFUSION_LABELS) + 1) + "|",
            *(
                f"| {truth} | " + " | ".join(str(row[p]) for p in CONFUSION_LABELS) + " |"
                for truth, row in self.confusion.items()
            ),
        ]
        if self.worst_images:
            lines += ["", "| worst images | TP | FP | FN |", "|---|---|---|---|"]
            lines += [f"| {w.file_name} | {w.tp} | {w.fp} | {w.fn} |" for w in self.worst_images]
        return "\n".join(lines)


def comparison_markdown(results: Mapping[str, EvaluationResult]) -> str:
    """One table with a column per model (e.g. challenger and champion), metric by metric."""
    flat = {model: result.flat_metrics() for model, result in results.items()}
    names = list(dict.fromkeys(name for metrics in flat.values() for name in metrics))
    lines = ["| metric | " + " | ".join(flat) + " |", "|---" * (len(flat) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(_fmt(metrics.get(name)) for metrics in flat.values()) + " |"
        for name in names
    ]
    return "\n".join(lines)


def evaluate_detections(
    ground_truth: str | Path | Mapping,
    predictions: Mapping[int, Sequence[Detection]],
    score_threshold: float,
    worst: int = 5,
) -> EvaluationResult:
    """Evaluate ``predictions`` (image id -> detections, all scores) against a COCO split.

    ``ground_truth`` is a COCO JSON path or the parsed dict. Images without an entry in
    ``predictions`` count as "nothing detected". Raises ValueError naming the offending item
    for predictions on unknown images, unknown labels or unknown GT categories.
    """
    gt = _normalised_ground_truth(ground_truth)
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
    gt_by_image: dict[int, list[tuple[str, Box]]] = {i: [] for i in images}
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            gt_by_image[ann["image_id"]].append((CLASS_NAME_BY_ID[ann["category_id"]],
                                                 _xyxy(ann["bbox"])))
    coco_stats, per_class_ap, recall_thresholds, pr_curves = _coco_eval(gt, predictions)

    class_counts = {name: MatchCounts() for name in CLASS_NAMES}
    answers = AnswerCounts()
    confusion = {truth: dict.fromkeys(CONFUSION_LABELS, 0) for truth in CONFUSION_LABELS}
    per_image: list[ImageErrors] = []
    for image_id, truths in gt_by_image.items():
        kept = sorted((d for d in predictions.get(image_id, ()) if d.score >= score_threshold),
                      key=lambda d: -d.score)
        image_counts = MatchCounts()
        for name in CLASS_NAMES:
            counts = _match_one_class([t[1] for t in truths if t[0] == name],
                                      [d.box for d in kept if d.label == name])
            class_counts[name] += counts
            image_counts += counts
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
        coco=coco_stats,
        classes={
            name: ClassMetrics(name, gt_boxes[name], *per_class_ap[name], class_counts[name])
            for name in CLASS_NAMES
        },
        answers=answers,
        confusion=confusion,
        recall_thresholds=recall_thresholds,
        pr_curves=pr_curves,
        worst_images=worst_images,
    )


def pr_curves_png(result: EvaluationResult) -> bytes:
    """Precision-recall curves per class at IoU 0.5 (COCO's 101 recall points) as a PNG."""
    figure = Figure(figsize=(5, 4), dpi=100)
    axes = figure.subplots()
    for name, precision in result.pr_curves.items():
        if precision is None:
            axes.plot([], [], label=f"{name} (no ground truth)")
        else:
            ap50 = result.classes[name].ap50
            axes.plot(result.recall_thresholds, precision, label=f"{name} (AP50 {_fmt(ap50)})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title="Precision-recall at IoU 0.5")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    return png_bytes(figure)


def confusion_matrix_png(result: EvaluationResult) -> bytes:
    """The scratch/dent/background confusion (rows: truth, columns: prediction) as a PNG."""
    counts = np.array([[result.confusion[t][p] for p in CONFUSION_LABELS]
                       for t in CONFUSION_LABELS])
    figure = Figure(figsize=(4.5, 4), dpi=100)
    axes = figure.subplots()
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(CONFUSION_LABELS))
    axes.set_xticks(ticks, CONFUSION_LABELS)
    axes.set_yticks(ticks, CONFUSION_LABELS)
    axes.set(xlabel="predicted", ylabel="ground truth",
             title=f"Confusion at IoU {MATCH_IOU:g}, score >= {result.score_threshold:g}")
    top = counts.max() or 1
    for (row, col), value in np.ndenumerate(counts):
        axes.text(col, row, str(value), ha="center", va="center",
                  color="white" if value > top / 2 else "black")
    return png_bytes(figure)


def worst_examples_png(
    result: EvaluationResult,
    ground_truth: str | Path | Mapping,
    predictions: Mapping[int, Sequence[Detection]],
    image_root: Path,
    columns: int = 3,
    thumb_size: int = 320,
) -> bytes | None:
    """A contact sheet of ``result.worst_images`` (None when there are none): ground truth
    captioned "true <class>", detections at the score threshold captioned with their score.
    ``file_name`` in the COCO split is relative to ``image_root``."""
    if not result.worst_images:
        return None
    truths: dict[int, list[dict]] = {}
    for ann in _normalised_ground_truth(ground_truth)["annotations"]:
        truths.setdefault(ann["image_id"], []).append(ann)
    pictures = []
    for worst in result.worst_images:
        with Image.open(Path(image_root) / worst.file_name) as opened:
            picture = opened.convert("RGB")
        anns = truths.get(worst.image_id, [])
        picture = draw_boxes(picture, [_xyxy(a["bbox"]) for a in anns],
                             [f"true {CLASS_NAME_BY_ID[a['category_id']]}" for a in anns])
        kept = [d for d in predictions.get(worst.image_id, ())
                if d.score >= result.score_threshold]
        picture = draw_boxes(picture, [d.box for d in kept], [d.label for d in kept],
                             [d.score for d in kept])
        pictures.append(picture)
    return png_bytes(contact_sheet(pictures, columns, thumb_size))


def _normalised_ground_truth(ground_truth: str | Path | Mapping) -> dict:
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


def _coco_eval(gt: dict, predictions: Mapping[int, Sequence[Detection]]):
    """Run COCOeval (bbox) and return (stats, per-class (AP, AP50), recall points, PR curves)."""
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
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: _defined(evaluator.stats[i]) for i, name in enumerate(COCO_STAT_NAMES)}
    # precision[T, R, K, A, M]: IoU thresholds x recall points x classes x area ranges x maxDets.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    iou_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - MATCH_IOU)))
    per_class, curves = {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = CLASS_NAME_BY_ID[cat_id]
        curve = precision[iou_50, :, k]
        per_class[name] = (_mean_defined(precision[:, :, k]), _mean_defined(curve))
        curves[name] = [float(v) for v in curve] if (curve > -1).any() else None
    return stats, per_class, [float(r) for r in evaluator.params.recThrs], curves


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _match_one_class(truths: list[Box], boxes: list[Box]) -> MatchCounts:
    """Greedy matching: each box (highest score first) takes the free truth it overlaps most."""
    free = list(range(len(truths)))
    tp = 0
    for box in boxes:
        best = _best_match(box, truths, free)
        if best is not None:
            free.remove(best)
            tp += 1
    return MatchCounts(tp=tp, fp=len(boxes) - tp, fn=len(truths) - tp)


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


def _xyxy(bbox: Sequence[float]) -> Box:
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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


