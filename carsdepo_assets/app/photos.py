"""Photos checked on the page: each decoded as ingestion decodes it, answered by a registered
detector, drawn, and recorded in the inference log.

The detector runs once per submission and keeps every detection down to its score floor
(``box_score_thresh``), so moving the threshold on the page re-filters stored scores instead
of running the model again. What is recorded is the answer at the model's operating threshold,
the one every other path answers at unless told otherwise. A submission is measured against
the REST request limits before any pixel is decoded (``limits``); a photo longer than the
working side is read at a reduced scale, as REST reads it, and its answer's boxes are given
in the photo's own pixels.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

from carsdepo_assets.app.limits import PhotoLimits
from carsdepo_assets.detection.backends import TrainedDetector
from carsdepo_assets.detection.types import Detection, damage_answer
from carsdepo_assets.images.files import FileTooBig, NotARegularFile, read_regular_file
from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.images.manifest import DUPLICATE, STORED
from carsdepo_assets.images.store import ImageStore, sha256_hex
from carsdepo_assets.images.validate import RejectedImage, decode_image, file_too_big_reason
from carsdepo_assets.prediction.inference_log import APP, InferenceLog, InferenceRecord
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.runtime import prepare_inference_process
from carsdepo_assets.state import StateLayout
from carsdepo_assets.visual import draw_boxes

# The inference log's source for answers given on the page.
RECORDED_SOURCE = APP


class SubmissionTooLarge(ValueError):
    """A submission over the request limits (photos, declared pixels), refused as a whole."""


@dataclass(frozen=True)
class CheckedPhoto:
    """One photo of a submission: its detections down to the score floor, or why it could
    not be checked (``reason``, the words ingestion uses)."""

    name: str
    sha256: str | None
    image: Image.Image | None = None  # as the model saw it: read at ``scale``
    detections: tuple[Detection, ...] = ()  # in the pixels of ``image``
    reason: str | None = None
    scale: float = 1.0

    def answer(self, threshold: float) -> str | list[dict]:
        """``"None"`` or the damage found at ``threshold``, boxes in the photo's pixels."""
        return damage_answer([Detection(found.label, found.score,
                                        tuple(value / self.scale for value in found.box))
                              for found in self.detections], threshold)

    def drawn(self, threshold: float) -> Image.Image:
        """The photo with the boxes kept at ``threshold`` drawn, each class in its colour."""
        if self.image is None:
            raise ValueError(f"{self.name}: no image to draw ({self.reason})")
        kept = [found for found in self.detections if found.score >= threshold]
        return draw_boxes(self.image, [found.box for found in kept],
                          [found.label for found in kept], [found.score for found in kept])


@dataclass(frozen=True)
class PhotoCheck:
    """A submission's answers, the model that gave them and the threshold they were recorded
    at; ``score_floor`` is the lowest threshold the stored scores can show."""

    model: ModelRef
    threshold: float
    score_floor: float
    photos: tuple[CheckedPhoto, ...]


class PhotoChecker:
    """A detector loaded once per process, answering one submission at a time: concurrent
    sessions queue instead of splitting the cores between several sets of torch threads."""

    def __init__(self, detector: TrainedDetector, model: ModelRef, log: InferenceLog | None):
        self.detector = detector
        self.model = model
        self.log = log
        self._one_at_a_time = threading.Lock()

    @property
    def threshold(self) -> float:
        return self.detector.config.score_threshold

    def check(self, uploads: Sequence[tuple[str, bytes]], limits: PhotoLimits) -> PhotoCheck:
        """Answer each ``(name, bytes)``; a photo that cannot be used gets its reason, the
        others their answer. Raises SubmissionTooLarge over the request limits."""
        _check_submission(uploads, limits)
        prepare_inference_process()
        checked = [_decoded(name, data, limits) for name, data in uploads]
        images = [photo.image for photo in checked if photo.image is not None]
        started = time.perf_counter()
        with self._one_at_a_time:
            found = iter(self.detector.predict(images) if images else [])
        latency = 1000.0 * (time.perf_counter() - started) / max(1, len(images))
        photos = tuple(
            photo if photo.image is None
            else replace(photo, detections=tuple(next(found)))
            for photo in checked
        )
        if self.log is not None:
            self.log.append(self._record(photo, latency) for photo in photos)
        return PhotoCheck(self.model, self.threshold, self.detector.config.box_score_thresh,
                          photos)

    def _record(self, photo: CheckedPhoto, latency_ms: float) -> InferenceRecord:
        return InferenceRecord(
            source=RECORDED_SOURCE, model_name=self.model.name, model_version=self.model.version,
            image_sha256=photo.sha256,
            latency_ms=round(latency_ms, 2),
            result=None if photo.reason else photo.answer(self.threshold), error=photo.reason,
            image=photo.name, threshold=self.threshold,
        )


def stored_batches(layout: StateLayout) -> list[str]:
    """The batches with a manifest, by name."""
    return sorted(path.stem for path in layout.manifests.glob("*.json"))


def stored_batch_photos(
    layout: StateLayout, batch: str, limits: PhotoLimits
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The first ``limits.max_photos`` stored photos of ``batch`` as ``(name, bytes)``, named
    by the file they came from, and one line per stored photo that could not be read."""
    store = ImageStore(layout.images)
    rows = [row for row in load_manifest(layout, batch).rows
            if row.sha256 and row.status in (STORED, DUPLICATE)]
    photos: list[tuple[str, bytes]] = []
    unreadable: list[str] = []
    for row in rows[:limits.max_photos]:
        try:
            path = store.path_for(row.sha256)
            photos.append((row.path, read_regular_file(path, limits.policy.max_file_bytes)))
        except NotARegularFile as refused:
            unreadable.append(f"{row.path} ({path}): {refused.reason}")
        except FileTooBig:
            unreadable.append(f"{row.path} ({path}): {file_too_big_reason(None, limits.policy)}")
        except OSError as error:  # FileNotFoundError from the store names the image and store
            unreadable.append(f"{row.path} ({row.sha256}): {error.strerror or error}")
    return photos, unreadable


def _check_submission(uploads: Sequence[tuple[str, bytes]], limits: PhotoLimits) -> None:
    """Refuse a submission with too many photos, or whose headers declare more pixels than a
    request may, before any pixel is decoded."""
    if len(uploads) > limits.max_photos:
        raise SubmissionTooLarge(f"{len(uploads)} photos: at most {limits.max_photos} at a time")
    declared = sum(_declared_pixels(data) for _, data in uploads)
    if declared > limits.request.max_request_pixels:
        raise SubmissionTooLarge(
            f"these photos declare {declared:,} pixels together: at most "
            f"{limits.request.max_request_pixels:,} at a time; check fewer at once")


def _declared_pixels(data: bytes) -> int:
    """The pixels an image header declares; 0 for bytes that are no image (their reason comes
    with the decoding proper)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for bytes that are no image
        return 0
    return width * height


def _decoded(name: str, data: bytes, limits: PhotoLimits) -> CheckedPhoto:
    """The photo upright RGB, at most the working side long, or the reason ingestion gives."""
    policy = limits.policy
    sha = sha256_hex(data) if data else None
    if len(data) > policy.max_file_bytes:
        return CheckedPhoto(name, sha, reason=file_too_big_reason(len(data), policy))
    try:
        image = decode_image(data, policy).image
    except RejectedImage as rejected:
        return CheckedPhoto(name, sha, reason=rejected.reason)
    scale = min(1.0, limits.request.max_working_side / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return CheckedPhoto(name, sha, image, scale=scale)
