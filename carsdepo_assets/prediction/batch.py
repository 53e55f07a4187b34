"""Batch predictions: a detector over every stored image of a batch, a chunk at a time.

``predict_batch`` writes ``predictions/<batch>.jsonl`` under CARSDEPO_HOME with one row per
distinct image of the batch, in manifest order::

    {"batch", "sha256", "width", "height", "damage": "None" | [{"label", "score", "box"}],
     "max_score", "model_name", "model_version", "threshold", "latency_ms", "predicted_at"}

``damage`` is the answer at the operating ``threshold`` (boxes in original pixels);
``max_score`` is the best candidate's score even below it (0 when there is none), which shows
how close a "None" came to being damage. An image the store cannot give back gets a row with
``error`` instead of ``damage``; the batch goes on.

Memory is bounded by the chunk: images are opened ``chunk_size`` at a time and rows stream to a
temporary file renamed into place at the end, so readers see the previous file or the new one,
never half of one. Each chunk's answers are also appended to the inference log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from carsdepo_assets.detection.threads import torch_threads_from_load
from carsdepo_assets.detection.types import Detection, damage_answer
from carsdepo_assets.fileio import atomic_writer
from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.prediction.inference_log import BATCH, InferenceLog, InferenceRecord, utc_now
from carsdepo_assets.prediction.runtime import prepare_inference_process
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import CLASS_NAMES, NONE_ANSWER

if TYPE_CHECKING:  # torch and mlflow: the Dagster code location imports this module
    from carsdepo_assets.detection.backends import TrainedDetector
    from carsdepo_assets.prediction.models import ModelRef

DEFAULT_CHUNK = 8
EXAMPLES = 8  # rows a summary keeps to show
# What opening a stored image can raise: missing file, not an image, a bomb, a bad id.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Detected:
    """A detector's candidates for one image (None, with ``error``, when it could not be
    opened) and the model's milliseconds for it."""

    key: str
    detections: list[Detection] | None
    size: tuple[int, int] | None
    latency_ms: float
    error: str | None = None


def detect_in_chunks(
    detector: TrainedDetector,
    keys: Iterable[str],
    open_image: Callable[[str], Image.Image],
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[Detected]:
    """Open and predict ``chunk_size`` images at a time, yielding results in input order."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: must be at least 1")
    prepare_inference_process()
    with torch_threads_from_load():
        yield from _detect(detector, keys, open_image, chunk_size)


def _detect(detector: TrainedDetector, keys: Iterable[str],
            open_image: Callable[[str], Image.Image], chunk_size: int) -> Iterator[Detected]:
    for chunk in _chunks(keys, chunk_size):
        opened: list[tuple[str, Image.Image | str]] = []
        for key in chunk:
            try:
                opened.append((key, open_image(key)))
            except UNREADABLE as error:
                opened.append((key, f"cannot read image {key}: {error}"))
        images = [item for _, item in opened if isinstance(item, Image.Image)]
        started = time.perf_counter()
        found = iter(detector.predict(images) if images else [])
        per_image = 1000.0 * (time.perf_counter() - started) / max(1, len(images))
        for key, item in opened:
            if isinstance(item, str):
                yield Detected(key, None, None, 0.0, item)
            else:
                yield Detected(key, next(found), item.size, per_image)


@dataclass
class BatchPredictions:
    """What ``predict_batch`` wrote, summarised for run metadata."""

    batch: str
    path: Path
    model: ModelRef
    threshold: float
    images: int = 0
    damaged: int = 0
    errors: int = 0
    detections_per_class: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))
    max_scores: list[float] = field(default_factory=list)
    latency_ms_total: float = 0.0
    examples: list[dict] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return self.images - self.errors

    @property
    def none(self) -> int:
        return self.answered - self.damaged

    @property
    def share_damaged(self) -> float | None:
        return self.damaged / self.answered if self.answered else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_total / self.answered if self.answered else None

    def add(self, row: dict) -> None:
        self.images += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(row)
        if "error" in row:
            self.errors += 1
            return
        self.max_scores.append(row["max_score"])
        self.latency_ms_total += row["latency_ms"]
        if row["damage"] != NONE_ANSWER:
            self.damaged += 1
            for detection in row["damage"]:
                self.detections_per_class[detection["label"]] += 1


def prediction_path(layout: StateLayout, batch: str) -> Path:
    return layout.prediction_path(batch)


def predict_batch(
    layout: StateLayout,
    batch: str,
    detector: TrainedDetector,
    model: ModelRef,
    *,
    threshold: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    log: InferenceLog | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchPredictions:
    """Predict every stored image of ``batch`` and write its predictions file (see module doc).

    ``threshold`` defaults to the detector's operating point. Raises FileNotFoundError when the
    batch has no manifest, ValueError for a threshold outside [0, 1].
    """
    cut = detector.config.score_threshold if threshold is None else float(threshold)
    if not 0.0 <= cut <= 1.0:
        raise ValueError(f"threshold={threshold}: must be within [0, 1]")
    hashes = load_manifest(layout, batch).image_hashes()
    summary = BatchPredictions(batch, prediction_path(layout, batch), model, cut)
    pending: list[InferenceRecord] = []
    with atomic_writer(summary.path, binary=False) as handle:
        found = detect_in_chunks(detector, hashes, ImageStore(layout.images).open, chunk_size)
        for done, detected in enumerate(found, start=1):
            row = _row(batch, detected, model, cut)
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
            summary.add(row)
            pending.append(_record(row))
            if len(pending) >= chunk_size or done == len(hashes):
                if log is not None:
                    log.append(pending)
                pending = []
            if progress is not None:
                progress(done, len(hashes))
    return summary


def read_predictions(path: Path) -> Iterator[dict]:
    """The rows of a predictions file, one at a time."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not a JSON row ({error})") from error


def _row(batch: str, detected: Detected, model: ModelRef, threshold: float) -> dict[str, Any]:
    row: dict[str, Any] = {"batch": batch, "sha256": detected.key}
    if detected.detections is None:
        row["error"] = detected.error
    else:
        row.update(
            width=detected.size[0],
            height=detected.size[1],
            damage=damage_answer(detected.detections, threshold),
            max_score=round(max((d.score for d in detected.detections), default=0.0), 4),
        )
    row.update(
        model_name=model.name, model_version=model.version, threshold=threshold,
        latency_ms=round(detected.latency_ms, 2), predicted_at=utc_now(),
    )
    return row


def _record(row: dict) -> InferenceRecord:
    return InferenceRecord(
        source=BATCH, model_name=row["model_name"], model_version=row["model_version"],
        image_sha256=row["sha256"], latency_ms=row["latency_ms"], result=row.get("damage"),
        error=row.get("error"), batch=row["batch"], at=row["predicted_at"],
        threshold=row["threshold"],
    )


def _chunks(keys: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
