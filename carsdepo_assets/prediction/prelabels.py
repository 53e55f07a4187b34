"""Pre-annotations for Label Studio tasks from a registered detector (the champion).

Annotators see the detections scoring at least ``min_score`` as a starting point. That floor is
below the operating threshold on purpose: a box the model is unsure about is worth a look, and
it makes the image uncertain (``labeling.prelabels.image_confidence``), so Label Studio's
uncertainty sampling serves it early. An image that cannot be opened gets no pre-annotation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from PIL import Image

from carsdepo_assets.labeling.prelabels import Prelabels
from carsdepo_assets.prediction.batch import DEFAULT_CHUNK, detect_in_chunks

if TYPE_CHECKING:  # torch and mlflow: the Dagster code location imports this module
    from carsdepo_assets.detection.backends import TrainedDetector
    from carsdepo_assets.prediction.models import ModelRef

DEFAULT_MIN_SCORE = 0.25


def model_prelabels(
    detector: TrainedDetector,
    model: ModelRef,
    hashes: Iterable[str],
    open_image: Callable[[str], Image.Image],
    min_score: float = DEFAULT_MIN_SCORE,
    chunk_size: int = DEFAULT_CHUNK,
) -> Prelabels:
    """The detections of ``detector`` at or above ``min_score`` for each image sha256."""
    detections = {
        found.key: [d for d in found.detections if d.score >= min_score]
        for found in detect_in_chunks(detector, hashes, open_image, chunk_size)
        if found.detections is not None
    }
    return Prelabels(model_version=str(model), detections=detections)
