"""The evaluation as people read it: markdown tables and PNG plots of an ``EvaluationResult``
(the numbers themselves are computed in ``metrics.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from carsdepo_assets.detection.metrics import (
    COCO_MAX_DETECTIONS,
    COCO_SCORE_FLOOR,
    COCO_STAT_NAMES,
    CONFUSION_LABELS,
    MATCH_IOU,
    SIZES,
    EvaluationResult,
    normalised_ground_truth,
    xyxy,
)
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CLASS_NAME_BY_ID
from carsdepo_assets.visual import contact_sheet, draw_boxes, png_bytes


def result_markdown(result: EvaluationResult) -> str:
    """The report as markdown: headline numbers, per class (AP50 by size, what became of the
    ground-truth boxes), answers, confusion, worst images."""
    overall = result.overall
    lines = [
        f"**{result.images} images. AP: COCO protocol (every detection scoring at least "
        f"{COCO_SCORE_FLOOR:g}, up to {COCO_MAX_DETECTIONS} per image); the rest at the "
        f"operating threshold {result.score_threshold:g}, matching at IoU {MATCH_IOU:g}.**",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {_fmt(result.coco[name])} |" for name in COCO_STAT_NAMES),
        f'| damage AP50 (class-agnostic) | {_fmt(result.damage["AP50"])} |',
        f'| damage AP (class-agnostic) | {_fmt(result.damage["AP"])} |',
        f"| precision | {_fmt(overall.precision)} |",
        f"| recall | {_fmt(overall.recall)} |",
        f"| F1 | {_fmt(overall.f1)} |",
        f'| damaged-vs-"None" accuracy | {_fmt(result.none_accuracy)} |',
        "",
        "| class | GT boxes | AP | AP50 | " + " | ".join(f"AP50 {size}" for size in SIZES)
        + " | precision | recall | F1 | TP | FP | FN |",
        "|---" * (10 + len(SIZES)) + "|",
    ]
    for name, c in result.classes.items():
        k = c.counts
        by_size = " | ".join(_fmt(c.ap50_by_size.get(size)) for size in SIZES)
        lines.append(
            f"| {name} | {c.gt_boxes} | {_fmt(c.ap)} | {_fmt(c.ap50)} | {by_size} "
            f"| {_fmt(k.precision)} | {_fmt(k.recall)} | {_fmt(k.f1)} | {k.tp} | {k.fp} "
            f"| {k.fn} |"
        )
    lines += [
        "",
        "| ground-truth boxes | found | found as the other class | badly localised | missed |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {o.found} | {o.other_class} | {o.badly_localised} | {o.missed} |"
            for name, o in ((name, c.outcomes) for name, c in result.classes.items())
        ),
    ]
    a = result.answers
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
            for truth, row in result.confusion.items()
        ),
    ]
    if result.worst_images:
        lines += ["", "| worst images | TP | FP | FN |", "|---|---|---|---|"]
        lines += [f"| {w.file_name} | {w.tp} | {w.fp} | {w.fn} |" for w in result.worst_images]
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
    for ann in normalised_ground_truth(ground_truth)["annotations"]:
        truths.setdefault(ann["image_id"], []).append(ann)
    pictures = []
    for worst in result.worst_images:
        with Image.open(Path(image_root) / worst.file_name) as opened:
            picture = opened.convert("RGB")
        anns = truths.get(worst.image_id, [])
        picture = draw_boxes(picture, [xyxy(a["bbox"]) for a in anns],
                             [f"true {CLASS_NAME_BY_ID[a['category_id']]}" for a in anns])
        kept = [d for d in predictions.get(worst.image_id, ())
                if d.score >= result.score_threshold]
        picture = draw_boxes(picture, [d.box for d in kept], [d.label for d in kept],
                             [d.score for d in kept])
        pictures.append(picture)
    return png_bytes(contact_sheet(pictures, columns, thumb_size))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
