"""Run a detector over a COCO split of the image store and score it (no Dagster)."""

from __future__ import annotations

import time
from pathlib import Path

from carsdepo_assets.detection.backends import TrainedDetector
from carsdepo_assets.detection.metrics import (
    COCO_MAX_DETECTIONS,
    COCO_SCORE_FLOOR,
    EvaluationResult,
    evaluate_detections,
)
from carsdepo_assets.detection.threads import torch_threads_from_load
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.images.store import ImageStore


def predict_split(
    detector: TrainedDetector, coco: dict, image_root: Path, batch_size: int = 4
) -> tuple[dict[int, list[Detection]], float]:
    """Predictions per COCO image id (images read by their ``sha256`` from the store), as the
    COCO protocol wants them (down to ``COCO_SCORE_FLOOR``, up to ``COCO_MAX_DETECTIONS`` per
    image, whatever the detector's own limits), and the mean milliseconds of model time per
    image."""
    store = ImageStore(image_root)
    predictions: dict[int, list[Detection]] = {}
    elapsed = 0.0
    entries = coco["images"]
    with (detector.output_limits(COCO_SCORE_FLOOR, COCO_MAX_DETECTIONS),
          torch_threads_from_load()):
        for start in range(0, len(entries), batch_size):
            chunk = entries[start:start + batch_size]
            pictures = [store.open(entry["sha256"]) for entry in chunk]
            began = time.perf_counter()
            found = detector.predict(pictures)
            elapsed += time.perf_counter() - began
            predictions.update({entry["id"]: dets
                                for entry, dets in zip(chunk, found, strict=True)})
    return predictions, 1000.0 * elapsed / max(1, len(entries))


def evaluate_on_split(
    detector: TrainedDetector, coco: dict, image_root: Path, batch_size: int = 4
) -> tuple[EvaluationResult, dict[int, list[Detection]], float]:
    """Metrics on one split (AP by the COCO protocol, the rest at the detector's operating
    threshold), the predictions behind them, and ms per image."""
    predictions, ms_per_image = predict_split(detector, coco, image_root, batch_size)
    result = evaluate_detections(coco, predictions, detector.config.score_threshold)
    return result, predictions, ms_per_image
