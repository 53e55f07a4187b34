"""Answers for image files named by a person (``carsdepo predict IMAGE...``).

Files are read, validated and decoded exactly as the REST server does it (``pyfunc.answer_rows``
with the ``path`` column: same format, size and decompression-bomb limits), so the command and
the server give the same answer for the same photo.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd

from carsdepo_assets.detection.backends import TrainedDetector
from carsdepo_assets.prediction.batch import DEFAULT_CHUNK
from carsdepo_assets.prediction.inference_log import CLI, InferenceLog, InferenceRecord
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.pyfunc import PATH_COLUMN, answer_frame


def predict_files(
    detector: TrainedDetector,
    paths: Sequence[str],
    model: ModelRef,
    *,
    threshold: float | None = None,
    log: InferenceLog | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[dict]:
    """One answer per path, in order: ``{"image": path, "damage": "None" | [...]}`` or
    ``{"image": path, "error": reason}``; each chunk's answers go to ``log`` as source ``cli``,
    with the sha256 of the bytes answered (none for a file that could not be read).

    Raises ValueError for a threshold outside [0, 1]."""
    cut = detector.config.score_threshold if threshold is None else float(threshold)
    if not 0.0 <= cut <= 1.0:
        raise ValueError(f"threshold={threshold}: must be within [0, 1]")
    answers: list[dict] = []
    for start in range(0, len(paths), chunk_size):
        chunk = [str(path) for path in paths[start:start + chunk_size]]
        started = time.perf_counter()
        found = answer_frame(detector, pd.DataFrame({PATH_COLUMN: chunk}), cut)
        latency = 1000.0 * (time.perf_counter() - started) / len(chunk)
        answers += [{"image": path, **answer.record}
                    for path, answer in zip(chunk, found, strict=True)]
        if log is not None:
            log.append(
                InferenceRecord(
                    source=CLI, model_name=model.name, model_version=model.version,
                    image_sha256=answer.sha256, latency_ms=round(latency, 2),
                    result=answer.record.get("damage"), error=answer.record.get("error"),
                    image=path, threshold=cut,
                )
                for path, answer in zip(chunk, found, strict=True)
            )
    return answers
