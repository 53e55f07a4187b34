"""One detector interface, several backends.

Every backend trains on COCO splits with a ``DetectorConfig`` and returns a ``TrainedDetector``
that predicts ``Detection`` lists in original pixel coordinates and saves itself as a
self-describing folder (``detector.json`` + ``model.pt``), which ``load_detector`` reopens without
being told which backend made it — what the MLflow pyfunc needs.

Backends are registered by import path, so a backend whose library is missing (detectron2)
costs nothing until it is asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
from PIL import Image, ImageOps
from torch import nn

from carsdepo_assets.detection.anchors import coverage_for, with_learned_anchors
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.data import (
    CocoSplit,
    Crop,
    LoadedSplit,
    boxes_as_trained,
    load_split,
)
from carsdepo_assets.detection.memory import keep_freed_memory
from carsdepo_assets.detection.operating_point import (
    OperatingPoint,
    calibrated,
    choose_operating_points,
)
from carsdepo_assets.detection.slicing import cut_by_tile, merge_detections, tiles
from carsdepo_assets.detection.threads import ThreadRecheck, choose_threads
from carsdepo_assets.detection.types import Detection, damage_answer
from carsdepo_assets.fileio import DamagedFile, atomic_write_bytes, atomic_write_json

DETECTOR_FILE = "detector.json"
WEIGHTS_FILE = "model.pt"
FORMAT = "carsdepo-detector/1"

# backend name -> "module:Class" of its DetectorBackend
BACKENDS: dict[str, str] = {
    "torchvision": "carsdepo_assets.detection.torchvision_backend:TorchvisionBackend",
    "detectron2": "carsdepo_assets.detection.detectron2_backend:Detectron2Backend",
}
# the library a backend needs, probed by ``auto``
REQUIRED_LIBRARY: dict[str, str] = {"detectron2": "detectron2"}
AUTO_PREFERENCE = ("detectron2", "torchvision")


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every training iteration."""

    iteration: int
    iterations: int
    losses: dict[str, float]  # each loss term and "total"
    lr: float
    images_per_second: float  # over the whole run so far
    elapsed_s: float
    val_metrics: dict[str, float] | None = None  # only on iterations where validation ran
    note: str | None = None  # for a person reading the run log (torch's thread count changed)


@dataclass
class TrainingSummary:
    """How training went; saved beside the weights and logged to MLflow."""

    backend: str
    iterations: int
    images_seen: int
    wall_s: float
    images_per_second: float
    final_losses: dict[str, float]
    best_iteration: int | None = None  # the kept weights, when a val split chose them
    best_val_metric: float | None = None
    val_metric_name: str = "val_AP50"
    val_history: list[dict] = field(default_factory=list)
    train_images: int = 0
    val_images: int = 0
    # anchors.anchor_coverage of the training boxes: class -> boxes, iou50, positive
    anchor_coverage: dict[str, dict] = field(default_factory=dict)
    # "iterations", or "time budget" when config.time_budget_s ended training before them
    stopped_by: str = "iterations"
    # with config.operating_precision: class -> operating_point.OperatingPoint.to_dict()
    operating_points: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped, the last good weights were kept."""

    def __init__(self, iteration: int, losses: dict[str, float], checkpoint: Path | None):
        self.iteration = iteration
        self.losses = losses
        self.checkpoint = checkpoint
        kept = (f"the last good checkpoint is {checkpoint}" if checkpoint
                else "no checkpoint had been written yet")
        super().__init__(
            f"training diverged at iteration {iteration}: non-finite loss {losses}; {kept}. "
            "Lower lr (or raise warmup_iterations / clip_grad_norm)."
        )


class TrainedDetector(ABC):
    """A trained model: predicts, saves itself, loads back from the folder alone.

    The weights are the torch module's state dict (``model.pt``) for every backend; a backend
    says how to build its module from the config (``_build_model``), how to run it on images
    resized to a given size (``_predict_resized``) and where its output limits live
    (``_set_output_limits``). ``predict`` is the one prediction path (evaluation, the CLI,
    batch predictions and REST serving all call it): the whole-image pass, and with
    ``config.work_side`` the tiles at native resolution too, and with ``config.flip_tta`` the
    same for the mirrored image, merged (slicing.py)."""

    backend: ClassVar[str]

    def __init__(self, model: nn.Module, config: DetectorConfig,
                 summary: TrainingSummary | None = None):
        self.model = model
        self.config = config
        self.summary = summary
        self._max_detections = config.box_detections_per_img

    def predict(self, images: list[Image.Image], *,
                single_pass: bool = False) -> list[list[Detection]]:
        """Detections per image (score >= ``config.box_score_thresh``, at most
        ``config.box_detections_per_img``, best first), boxes in the pixel coordinates of the
        image as given, labels from the taxonomy.

        With ``config.flip_tta`` the mirrored images are predicted too and their detections,
        mirrored back, are merged with the others like the tiles' (one non-maximum suppression
        per class at ``config.merge_iou``); ``single_pass`` skips that, for the validations
        inside a training, where the cheaper pass keeps the time budget for learning.

        With ``config.score_calibration`` each class's scores are mapped to its operating point
        chosen on val (operating_point.py)."""
        passes = [self._one_pass(images)]
        if self.config.flip_tta and not single_pass:
            mirrored = self._one_pass([ImageOps.mirror(image) for image in images])
            passes.append([[d.mirrored(image.width) for d in found]
                           for image, found in zip(images, mirrored, strict=True)])
        if len(passes) == 1 and not self.config.work_side:
            found = passes[0]  # the model's own output, already one box per object
        else:
            found = [merge_detections([d for detections in per_pass for d in detections],
                                      self.config.merge_iou)[:self._max_detections]
                     for per_pass in zip(*passes, strict=True)]
        if not self.config.score_calibration:
            return found
        raw_thresholds = dict(self.config.score_calibration)
        return [sorted(calibrated(detections, raw_thresholds, self.config.score_threshold),
                       key=lambda d: -d.score) for detections in found]

    def _one_pass(self, images: list[Image.Image]) -> list[list[Detection]]:
        """The whole-image pass and, with ``config.work_side``, every tile's detections in
        photo pixels, not yet merged."""
        whole = self._predict_resized(images, self.config.min_size, self.config.max_size)
        if not self.config.work_side:
            return whole
        return [found + self._tile_detections(image)
                for image, found in zip(images, whole, strict=True)]

    def _tile_detections(self, image: Image.Image) -> list[Detection]:
        """The detections of every tile (slicing.py) not cut by its border, in photo pixels."""
        found = []
        image = image if image.mode == "RGB" else image.convert("RGB")  # once, not per tile
        by_size: dict[tuple[int, int], list[Crop]] = {}
        for crop in tiles(image.width, image.height, self.config):
            by_size.setdefault(crop.size, []).append(crop)
        for (width, height), crops in by_size.items():
            pictures = [crop.read(image) for crop in crops]
            # min/max of the tile's own sides: the model sees each tile at scale 1
            for crop, detections in zip(crops, self._predict_resized(
                    pictures, min(width, height), max(width, height)), strict=True):
                found += [Detection(d.label, d.score, tuple(crop.to_photo(d.box)[0].tolist()))
                          for d in detections if not cut_by_tile(d.box, crop, image.size)]
        return found

    @abstractmethod
    def _predict_resized(self, images: list[Image.Image], min_size: int,
                         max_size: int) -> list[list[Detection]]:
        """Each image resized to ``min_size`` / ``max_size`` (the Faster R-CNN convention), run
        through the model, boxes back in the pixels of the image as given."""

    def answers(self, images: list[Image.Image], threshold: float | None = None) -> list:
        """The public answer per image: ``"None"`` or detections at the operating point."""
        cut = self.config.score_threshold if threshold is None else threshold
        return [damage_answer(found, cut) for found in self.predict(images)]

    @contextlib.contextmanager
    def output_limits(self, score_floor: float, max_detections: int) -> Iterator[TrainedDetector]:
        """Predict down to ``score_floor``, up to ``max_detections`` per image, inside the
        block (the COCO protocol's evaluation); the config's limits again afterwards."""
        self._set_output_limits(score_floor, max_detections)
        self._max_detections = max_detections
        try:
            yield self
        finally:
            self._set_output_limits(self.config.box_score_thresh,
                                    self.config.box_detections_per_img)
            self._max_detections = self.config.box_detections_per_img

    @abstractmethod
    def _set_output_limits(self, score_floor: float, max_detections: int) -> None:
        """Make the model keep detections down to ``score_floor``, at most ``max_detections``."""

    def save(self, directory: Path) -> Path:
        """Write weights and ``detector.json`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        atomic_write_bytes(directory / WEIGHTS_FILE, buffer.getvalue())
        atomic_write_json(directory / DETECTOR_FILE, {
            "format": FORMAT,
            "backend": self.backend,
            "config": self.config.to_dict(),
            "training": self.summary.to_dict() if self.summary else None,
        })
        return directory

    @classmethod
    def load(cls, directory: Path, config: DetectorConfig,
             summary: TrainingSummary | None) -> TrainedDetector:
        """The detector saved in ``directory``, on the GPU where there is one."""
        config = config.replace(device="cuda" if torch.cuda.is_available() else "cpu")
        model = cls._build_model(config)
        weights = Path(directory) / WEIGHTS_FILE
        try:
            state = torch.load(weights, map_location=config.device, weights_only=True)
        except RuntimeError as error:  # torch's reader on a truncated or overwritten archive
            raise DamagedFile(weights, f"not a whole model file: {str(error).splitlines()[0]}",
                              "retrain or re-register the model, or restore the file from a "
                              "backup (`carsdepo fsck` lists every damaged model file)") from None
        model.load_state_dict(state)
        return cls(model.to(config.device).eval(), config, summary)

    @classmethod
    @abstractmethod
    def _build_model(cls, config: DetectorConfig) -> nn.Module:
        """The untrained module for ``config``, without reading any pretrained weights."""


class DetectorBackend(ABC):
    name: ClassVar[str]
    detector_class: ClassVar[type[TrainedDetector]]

    @classmethod
    def refusals(cls, config: DetectorConfig) -> list[str]:
        """Why this backend cannot train ``config`` (empty when it can): ``auto`` passes over a
        backend that refuses, and ``train`` stops with the first reason before any work."""
        return []

    def train(
        self,
        train: CocoSplit,
        val: CocoSplit | None,
        config: DetectorConfig,
        workdir: Path,
        on_progress: Callable[[TrainProgress], None] | None = None,
        start_from: TrainedDetector | None = None,
    ) -> TrainedDetector:
        """Train on ``train``; with ``val``, keep the weights that score best on it. With
        ``start_from``, fine-tune that detector instead (``fine_tuning_config``).

        The part every backend shares: the splits are loaded and checked (a clear error before
        training starts), the config is resolved for this backend (anchors learned from the
        training boxes when it asks for that), torch's thread count is set for the run only
        (and chosen again as it goes, with ``adapt_threads``), and freed memory is kept for
        reuse (``memory.py``; for the rest of the process).
        ``_fit`` does the rest; the summary records how well the anchors cover the training
        boxes."""
        train_split = load_split(train, require_every_class=True)
        val_split = load_split(val, require_every_class=False) if val is not None else None
        config = resolve_config(config.replace(backend=self.name))
        if refusals := self.refusals(config):
            raise ConfigError(refusals[0])
        if start_from is not None:
            config = fine_tuning_config(config, start_from.config)
        train_boxes = boxes_as_trained(train_split, config)
        if config.learn_anchors:
            config = with_learned_anchors(config, train_boxes)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        keep_freed_memory()
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(config.num_threads)
        try:
            detector = self._fit(train_split, val_split, config, workdir,
                                 _adapting_threads(config, on_progress), start_from)
        finally:
            torch.set_num_threads(previous_threads)
        if detector.summary is not None:
            detector.summary.anchor_coverage = coverage_for(config, train_boxes)
        if config.operating_precision and val_split is not None:
            with_operating_points(detector, val_split)
        return detector

    @abstractmethod
    def _fit(
        self,
        train: LoadedSplit,
        val: LoadedSplit | None,
        config: DetectorConfig,
        workdir: Path,
        on_progress: Callable[[TrainProgress], None] | None,
        start_from: TrainedDetector | None = None,
    ) -> TrainedDetector:
        """The backend's own training, on checked splits with a resolved config, from
        ``start_from``'s weights when given."""


# What a fine-tuning run takes from its own config; the rest (architecture, anchors, input
# sizes, thresholds) is the starting model's, which its weights were trained for.
SCHEDULE_FIELDS = ("iterations", "time_budget_s", "batch_size", "optimizer", "lr",
                   "backbone_lr_factor", "weight_decay", "warmup_iterations", "clip_grad_norm",
                   "brightness", "contrast", "hflip", "seed", "device", "num_threads",
                   "adapt_threads", "eval_period", "checkpoint_period", "ema_decay",
                   "copy_paste")


def fine_tuning_config(config: DetectorConfig, start: DetectorConfig) -> DetectorConfig:
    """``start``'s config with ``config``'s training schedule: the model keeps its shape and
    anchors, learns for ``config.iterations`` more, and is not pretrained again."""
    if start.backend != config.backend:
        raise ConfigError(f"cannot fine-tune a {start.backend} detector with the "
                          f"{config.backend} backend")
    schedule = {name: getattr(config, name) for name in SCHEDULE_FIELDS}
    # new weights need their own operating points, chosen (or not) as this config says
    return start.replace(**schedule, learn_anchors=False, synthetic_pretrain_iterations=0,
                         operating_precision=config.operating_precision, score_calibration=())


def predict_records(detector: TrainedDetector, split: LoadedSplit, *,
                    single_pass: bool = False) -> dict[int, list[Detection]]:
    """The detector's detections for every image of ``split``, by image id, eight at a time."""
    predictions = {}
    for start in range(0, len(split.records), 8):
        chunk = split.records[start:start + 8]
        images = [_open_rgb(record.path) for record in chunk]
        for record, found in zip(chunk, detector.predict(images, single_pass=single_pass),
                                 strict=True):
            predictions[record.image_id] = found
    return predictions


def with_operating_points(detector: TrainedDetector, val: LoadedSplit,
                          raw_predictions: dict[int, list[Detection]] | None = None,
                          ) -> dict[str, OperatingPoint]:
    """Choose each class's operating point on ``val`` for ``config.operating_precision`` from
    the detector's deployed predictions with raw scores (``raw_predictions`` when they have
    been made already), and put them in its config (``score_calibration``) and summary.
    Changes ``detector`` in place; returns the points."""
    config = detector.config.replace(score_calibration=())
    detector.config = config
    if raw_predictions is None:
        raw_predictions = predict_records(detector, val)
    points = choose_operating_points(val.coco_ground_truth(), raw_predictions,
                                     config.operating_precision)
    detector.config = config.replace(score_calibration=tuple(
        (label, point.raw_threshold) for label, point in points.items()))
    if detector.summary is not None:
        detector.summary.operating_points = {label: point.to_dict()
                                             for label, point in points.items()}
    return points


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _adapting_threads(
    config: DetectorConfig, on_progress: Callable[[TrainProgress], None] | None
) -> Callable[[TrainProgress], None] | None:
    """``on_progress`` that, with ``config.adapt_threads``, also chooses torch's thread count
    again as training goes (``threads.ThreadRecheck``; progress is reported from the training
    thread, whose count torch sets) and tells of a change in the progress's ``note``."""
    if not config.adapt_threads:
        return on_progress
    recheck = ThreadRecheck(config.num_threads)

    def report(progress: TrainProgress) -> None:
        previous = recheck.threads
        choice = recheck.check()
        if choice is not None:
            torch.set_num_threads(choice.threads)
            progress = replace(progress, note=choice.change_note(previous))
        if on_progress is not None:
            on_progress(progress)

    return report


def backend_available(name: str) -> bool:
    """Are the backend's module and the library behind it importable (detectron2 is built
    locally, if at all)?"""
    if name not in BACKENDS or importlib.util.find_spec(BACKENDS[name].partition(":")[0]) is None:
        return False
    library = REQUIRED_LIBRARY.get(name)
    if library is None:
        return True
    try:
        importlib.import_module(library)
    except ImportError:
        return False
    return True


def resolve_backend(name: str, config: DetectorConfig | None = None) -> str:
    """``auto`` -> detectron2 when importable and able to train ``config`` (the small-damage
    design's crops and synthetic pretraining are torchvision's), else torchvision; other names
    are checked."""
    if name == "auto":
        return next(
            choice for choice in AUTO_PREFERENCE
            if backend_available(choice)
            and (config is None or not backend_class(choice).refusals(config))
        )
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: registered are {sorted(BACKENDS)}")
    if not backend_available(name):
        module = BACKENDS[name].partition(":")[0]
        library = REQUIRED_LIBRARY.get(name, module)
        raise ConfigError(
            f"backend {name!r} is not available here: it needs {library!r} and {module} "
            "to be importable (use backend 'auto' or 'torchvision')"
        )
    return name


def resolve_config(config: DetectorConfig) -> DetectorConfig:
    """The concrete config a run uses: backend, device, norm and torch threads decided, no
    ``auto`` left. Threads chosen from the load are marked to be chosen again during training
    (``adapt_threads``); a count from the config or ``CARSDEPO_TORCH_THREADS`` is not, unless
    the config asks for it."""
    device = config.device
    if device in ("auto", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' but no CUDA device is available here")
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads, adapt = config.num_threads, config.adapt_threads
    if not threads:
        choice = choose_threads()
        threads, adapt = choice.threads, adapt or choice.measured
    return config.replace(backend=resolve_backend(config.backend, config), device=device,
                          norm=config.resolved_norm, num_threads=threads, adapt_threads=adapt)


def backend_class(name: str) -> type[DetectorBackend]:
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(name: str) -> DetectorBackend:
    return backend_class(resolve_backend(name))()


def train_detector(
    train: CocoSplit,
    val: CocoSplit | None,
    config: DetectorConfig,
    workdir: Path,
    on_progress: Callable[[TrainProgress], None] | None = None,
    start_from: TrainedDetector | None = None,
) -> TrainedDetector:
    """Resolve ``config`` and train with the backend it names (the entry point for assets),
    fine-tuning ``start_from`` when given."""
    resolved = resolve_config(config)
    return get_backend(resolved.backend).train(train, val, resolved, Path(workdir), on_progress,
                                               start_from)


def load_detector(directory: Path) -> TrainedDetector:
    """Reopen a folder written by ``TrainedDetector.save`` (any backend)."""
    path = Path(directory) / DETECTOR_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        message = f"{directory} is not a saved detector: {DETECTOR_FILE} is missing"
        raise FileNotFoundError(message) from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported detector format {meta.get('format')!r}")
    backend = get_backend(meta["backend"])
    summary = TrainingSummary(**meta["training"]) if meta.get("training") else None
    return backend.detector_class.load(
        Path(directory), DetectorConfig.from_dict(meta["config"]), summary
    )
