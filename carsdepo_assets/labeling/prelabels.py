"""Pre-annotations: a model's detections shown to annotators as a starting point.

``label_studio_tasks`` asks a predictions provider (the ``prelabeler`` resource) for the
detections of a batch's images. Until a champion model exists the provider returns nothing and
tasks stay plain. Each image also gets a confidence score: Label Studio's "Uncertainty
sampling" then serves the least confident images first (active learning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from carsdepo_assets.detection.types import Detection
from carsdepo_assets.labeling.results import box_results, no_damage_result
from carsdepo_assets.labeling.snapshot import LabeledBox


@dataclass(frozen=True)
class ImageToLabel:
    """An image a provider is asked about: its store path and size."""

    sha256: str
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class Prelabels:
    """A model version's detections per image sha256 (an empty list: the model says "None")."""

    model_version: str
    detections: dict[str, list[Detection]] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskPrediction:
    """One pre-annotation ready for Label Studio."""

    task_id: int
    result: list[dict]
    score: float


def image_confidence(detections: Sequence[Detection]) -> float:
    """How sure the model is about the image as a whole, from 0 (a coin flip) to 1.

    Each detection's certainty is its distance from a coin flip, ``|2·score − 1|``. The image
    is as uncertain as its most uncertain detection. An image with no detection at all counts
    as certain.
    """
    return min((abs(2 * d.score - 1) for d in detections), default=1.0)


def prediction_result(detections: Sequence[Detection], width: int, height: int) -> list[dict]:
    """Detections (x1, y1, x2, y2 pixels) as rectangle results with scores, else "no damage"."""
    if not detections:
        return no_damage_result()
    boxes = [
        LabeledBox(d.label, (d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]))
        for d in detections
    ]
    return box_results(boxes, width, height, scores=[d.score for d in detections])


def task_predictions(
    prelabels: Prelabels, images: Sequence[ImageToLabel], task_ids: dict[str, int]
) -> list[TaskPrediction]:
    """Pre-annotations for the images that have both a task and the model's answer."""
    return [
        TaskPrediction(
            task_id=task_ids[image.sha256],
            result=prediction_result(prelabels.detections[image.sha256], image.width,
                                     image.height),
            score=image_confidence(prelabels.detections[image.sha256]),
        )
        for image in images
        if image.sha256 in task_ids and image.sha256 in prelabels.detections
    ]
