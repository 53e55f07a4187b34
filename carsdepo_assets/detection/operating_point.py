"""Each class's operating point, chosen on the validation split for a stated precision.

A detector's scores are not comparable across classes: on the real photos a dent at 0.3 may be
as trustworthy as a scratch at 0.6. One global threshold then trades one class's recall for the
other's precision by accident. Here each class gets the lowest score at which its validation
precision still reaches ``target_precision`` (the most recall that precision allows), or, where
no score reaches it, the score with the best F1, marked as such.

The platform keeps one threshold everywhere (the answer "None", the CLI's ``--threshold``, the
REST parameter, the app): rather than a threshold per class, each class's scores are mapped,
monotonically and piecewise linearly, so that its chosen raw score lands on the config's
``score_threshold`` (``calibrated_score``). Per-class AP is unchanged by the mapping (the ranking
within a class is the same); what changes is which boxes pass the operating threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from carsdepo_assets.detection.metrics import greedy_match, normalised_ground_truth, xyxy
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CLASS_NAME_BY_ID, CLASS_NAMES

# a mapped score never reaches 1 exactly, nor 0 from a positive raw score
_HIGHEST_RAW = 0.999


@dataclass(frozen=True)
class OperatingPoint:
    """A class's chosen raw score and what it gave on the validation split."""

    label: str
    raw_threshold: float
    precision: float
    recall: float
    reached: bool  # precision >= the target; else the best-F1 score was taken
    val_boxes: int

    def to_dict(self) -> dict:
        return {key: round(value, 4) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def precision_recall_curve(truths: Mapping[int, Sequence[tuple[float, float, float, float]]],
                           detections: Mapping[int, Sequence[Detection]],
                           ) -> list[tuple[float, float, float]]:
    """(score, precision, recall) of one class at each distinct score taken as the threshold,
    highest first, matching as metrics.py does (IoU 0.5, greedy by score within an image).
    Greedy matching by score means the matches of the detections above a threshold do not
    depend on those below it, so one matching gives the whole curve."""
    outcomes: list[tuple[float, bool]] = []
    for image_id, found in detections.items():
        ranked = sorted(found, key=lambda d: -d.score)
        matches = greedy_match(list(truths.get(image_id, ())), [d.box for d in ranked])
        outcomes += [(d.score, match is not None) for d, match in zip(ranked, matches, strict=True)]
    total = sum(len(boxes) for boxes in truths.values())
    outcomes.sort(key=lambda outcome: -outcome[0])
    curve: list[tuple[float, float, float]] = []
    tp = fp = 0
    for index, (score, is_tp) in enumerate(outcomes):
        tp, fp = tp + is_tp, fp + (not is_tp)
        if index + 1 < len(outcomes) and outcomes[index + 1][0] == score:
            continue  # a threshold keeps every detection of its score
        curve.append((score, tp / (tp + fp), tp / total if total else 0.0))
    return curve


def choose_operating_points(ground_truth: str | Mapping,
                            predictions: Mapping[int, Sequence[Detection]],
                            target_precision: float) -> dict[str, OperatingPoint]:
    """Per class with validation boxes and detections: the score with the most recall at
    precision >= ``target_precision`` (the higher score on a tie), else the best F1. A class
    without either is left out (it keeps the global threshold on its raw scores)."""
    gt = normalised_ground_truth(ground_truth)
    truths: dict[str, dict[int, list]] = {name: {} for name in CLASS_NAMES}
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            truths[CLASS_NAME_BY_ID[ann["category_id"]]].setdefault(
                ann["image_id"], []).append(xyxy(ann["bbox"]))
    points = {}
    for name in CLASS_NAMES:
        own = {image_id: [d for d in found if d.label == name]
               for image_id, found in predictions.items()}
        curve = precision_recall_curve(truths[name], own)
        if not truths[name] or not curve:
            continue
        reaching = [point for point in curve if point[1] >= target_precision]
        if reaching:  # the curve runs from the highest score down: max keeps the first tie
            score, precision, recall = max(reaching, key=lambda point: point[2])
        else:
            score, precision, recall = max(curve, key=lambda point: _f1(point[1], point[2]))
        points[name] = OperatingPoint(name, score, precision, recall, bool(reaching),
                                      sum(len(boxes) for boxes in truths[name].values()))
    return points


def calibrated_score(raw: float, raw_threshold: float, operating: float) -> float:
    """``raw`` mapped so that ``raw_threshold`` becomes ``operating``: linear from 0 up to it and
    from it up to 1, so the order of scores is kept and 0 and 1 stay where they are."""
    raw_threshold = min(max(raw_threshold, 1e-6), _HIGHEST_RAW)
    if raw < raw_threshold:  # the threshold itself maps exactly onto ``operating``
        return raw * operating / raw_threshold
    return operating + (raw - raw_threshold) * (1.0 - operating) / (1.0 - raw_threshold)


def calibrated(detections: Sequence[Detection], raw_thresholds: Mapping[str, float],
               operating: float) -> list[Detection]:
    """``detections`` with each class's scores mapped (``calibrated_score``); a class without a
    chosen threshold keeps its raw scores. Order is kept."""
    return [Detection(d.label, calibrated_score(d.score, raw_thresholds[d.label], operating), d.box)
            if d.label in raw_thresholds else d for d in detections]


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
