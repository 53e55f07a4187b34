"""Faster R-CNN through detectron2, behind the same interface as the torchvision backend.

Training is detectron2's own loop: the COCO splits are registered in ``DatasetCatalog`` /
``MetadataCatalog`` under names unique to the run (removed afterwards), a ``DefaultTrainer``
subclass reads them with detectron2's ``DatasetMapper`` and transforms (resize, brightness,
contrast, flip) and keeps images without boxes (``FILTER_EMPTY_ANNOTATIONS`` off: they teach
the "None" answer). Hooks do what the torchvision loop does in line: ``_LossGuard`` stops on a
non-finite loss and keeps weights that have just produced a finite one, ``_ModelSelection``
scores the val split with detectron2's ``COCOEvaluator`` (plus the "None" accuracy) and keeps
the best AP50, ``_Progress`` reports every iteration through ``on_progress``. Checkpoints and
the result are ordinary detector folders (``detector.json`` + ``model.pt``), so
``load_detector`` reopens any of them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
    detection_utils,
)
from detectron2.data import transforms as T
from detectron2.engine import DefaultTrainer, HookBase, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.modeling import build_model
from detectron2.solver import get_default_optimizer_params
from detectron2.structures import BoxMode, Instances
from detectron2.utils.env import seed_all_rng
from PIL import Image
from torch import nn

from carsdepo_assets.detection.backends import (
    WEIGHTS_FILE,
    DetectorBackend,
    TrainedDetector,
    TrainingDiverged,
    TrainingSummary,
    TrainProgress,
)
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.data import LoadedSplit
from carsdepo_assets.detection.detectron2_model import detectron2_cfg
from carsdepo_assets.detection.metrics import COCO_MAX_DETECTIONS, COCO_SCORE_FLOOR
from carsdepo_assets.detection.training import BEST_CHECKPOINT, LAST_CHECKPOINT, VAL_METRIC
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.fileio import atomic_write_json
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, CLASS_NAMES

PREDICT_BATCH = 8
VAL_COCO_FILE = "val_coco.json"
# taxonomy category id (1 = scratch, 2 = dent) -> detectron2's contiguous class index
CONTIGUOUS_ID = {CATEGORY_ID_BY_NAME[name]: index for index, name in enumerate(CLASS_NAMES)}


class Detectron2Detector(TrainedDetector):
    backend = "detectron2"

    def __init__(self, model: nn.Module, config: DetectorConfig,
                 summary: TrainingSummary | None = None):
        super().__init__(model, config, summary)

    def _predict_resized(self, images: list[Image.Image], min_size: int,
                         max_size: int) -> list[list[Detection]]:
        self.model.eval()
        results: list[list[Detection]] = []
        for start in range(0, len(images), PREDICT_BATCH):
            inputs = [self._model_input(image, min_size, max_size)
                      for image in images[start:start + PREDICT_BATCH]]
            with torch.inference_mode():
                outputs = self.model(inputs)
            results.extend(_detections(output["instances"]) for output in outputs)
        return results

    def _model_input(self, image: Image.Image, min_size: int, max_size: int) -> dict:
        """The image resized as the test loader resizes (without drawing a random size), with
        its original size, to which detectron2 scales the boxes back."""
        pixels = np.asarray(image.convert("RGB"))
        height, width = pixels.shape[:2]
        new_height, new_width = T.ResizeShortestEdge.get_output_shape(
            height, width, min_size, max_size)
        resized = T.ResizeTransform(height, width, new_height, new_width).apply_image(pixels)
        tensor = torch.as_tensor(resized.astype(np.float32).transpose(2, 0, 1))
        return {"image": tensor, "height": height, "width": width}

    def _set_output_limits(self, score_floor: float, max_detections: int) -> None:
        self.model.roi_heads.box_predictor.test_score_thresh = score_floor
        self.model.roi_heads.box_predictor.test_topk_per_image = max_detections

    @classmethod
    def _build_model(cls, config: DetectorConfig) -> nn.Module:
        return build_model(detectron2_cfg(config, load_backbone_weights=False))


def _detections(instances: Instances) -> list[Detection]:
    """detectron2's output (already in the original image's pixels, clipped, best first)."""
    instances = instances.to("cpu")
    return [
        Detection(CLASS_NAMES[int(index)], float(score), tuple(box))
        for box, score, index in zip(instances.pred_boxes.tensor.tolist(),
                                     instances.scores.tolist(),
                                     instances.pred_classes.tolist(), strict=True)
    ]


# --- datasets ----------------------------------------------------------------------------------


def dataset_dicts(split: LoadedSplit) -> list[dict]:
    """A checked split in detectron2's dataset format (absolute boxes, contiguous classes)."""
    return [
        {
            "file_name": str(record.path),
            "image_id": record.image_id,
            "height": record.height,
            "width": record.width,
            "annotations": [
                {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS,
                 "category_id": CONTIGUOUS_ID[int(label)], "iscrowd": 0}
                for box, label in zip(record.boxes.tolist(), record.labels.tolist(),
                                      strict=True)
            ],
        }
        for record in split.records
    ]


@contextlib.contextmanager
def registered_splits(
    train: LoadedSplit, val: LoadedSplit | None, workdir: Path
) -> Iterator[tuple[str, str | None]]:
    """Register the splits under names unique to this run; yield (train, val) names.

    The val split's COCO json (taxonomy ids) is written to ``workdir`` for ``COCOEvaluator``.
    """
    run = uuid.uuid4().hex[:12]
    names: list[str] = []
    try:
        for role, split in (("train", train), ("val", val)):
            if split is None:
                continue
            name = f"carsdepo_{run}_{role}"
            dicts = dataset_dicts(split)
            DatasetCatalog.register(name, lambda dicts=dicts: dicts)
            names.append(name)
            metadata = MetadataCatalog.get(name)
            metadata.set(thing_classes=list(CLASS_NAMES),
                         thing_dataset_id_to_contiguous_id=dict(CONTIGUOUS_ID))
            if role == "val":
                json_file = Path(workdir) / VAL_COCO_FILE
                atomic_write_json(json_file, split.coco_ground_truth())
                metadata.set(json_file=str(json_file))
        yield names[0], names[1] if len(names) > 1 else None
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


class CocoAP50Evaluator(COCOEvaluator):
    """detectron2's COCOEvaluator, also reporting AP50 per class (the torchvision backend's
    validation reports it too; detectron2 gives per-class AP over IoU 0.5:0.95 only)."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None or not class_names:
            return results
        # precision[IoU, recall, class, area, max dets]: IoU 0.5, all areas, most detections
        precision = coco_eval.eval["precision"][0, :, :, 0, -1]
        for index, name in enumerate(class_names):
            defined = precision[:, index][precision[:, index] > -1]
            results[f"AP50-{name}"] = float(defined.mean() * 100) if defined.size else math.nan
        return results


class NoneAnswerEvaluator(DatasetEvaluator):
    """Image-level accuracy of the damaged-vs-"None" answer at the operating threshold: an
    image is damaged when it has a box, answered damaged when a detection reaches the
    threshold (as ``metrics.AnswerCounts`` counts it)."""

    def __init__(self, dataset_name: str, threshold: float):
        self._damaged = {item["image_id"]: bool(item["annotations"])
                         for item in DatasetCatalog.get(dataset_name)}
        self._threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._right = self._total = 0

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for item, output in zip(inputs, outputs, strict=True):
            answered_damaged = bool((output["instances"].scores >= self._threshold).any())
            self._right += answered_damaged == self._damaged[item["image_id"]]
            self._total += 1

    def evaluate(self) -> dict:
        return {"answers": {"none_accuracy": self._right / self._total}} if self._total else {}


def val_metrics(results: dict) -> dict[str, float]:
    """Evaluator results -> the torchvision backend's names and scale (AP, AP50, AP50_<class>
    in [0, 1], none_accuracy); undefined values (NaN: no predictions, no boxes) are left out."""
    bbox = results.get("bbox", {})
    values = {
        "AP": bbox.get("AP", math.nan) / 100,
        "AP50": bbox.get("AP50", math.nan) / 100,
        "none_accuracy": results.get("answers", {}).get("none_accuracy", math.nan),
        **{f"AP50_{name}": bbox.get(f"AP50-{name}", math.nan) / 100 for name in CLASS_NAMES},
    }
    return {name: float(value) for name, value in values.items() if math.isfinite(value)}


# --- training ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """One training run: what the hooks need and what they learn (read back for the summary)."""

    config: DetectorConfig
    workdir: Path
    on_progress: Callable[[TrainProgress], None] | None
    losses: dict[str, float] = field(default_factory=dict)
    last_good: Path | None = None
    best: float | None = None
    best_iteration: int | None = None
    history: list[dict] = field(default_factory=list)
    images_seen: int = 0
    train_seconds: float = 0.0
    started: float = 0.0

    def record_losses(self, module: nn.Module, _inputs, output) -> None:
        """Forward hook on the model: in training mode its output is the loss terms."""
        if module.training and isinstance(output, dict):
            self.losses = {name: float(value.detach()) for name, value in output.items()}
            self.losses["total"] = sum(self.losses.values())

    def save(self, model: nn.Module, name: str) -> Path:
        return Detectron2Detector(model, self.config).save(self.workdir / name)


class _LossGuard(HookBase):
    """Runs between backward and the optimizer step (on detectron2's inner training loop):
    raises ``TrainingDiverged`` on a non-finite loss before the weights change, keeps every
    ``checkpoint_period`` the weights that have just produced a finite loss, and clips the
    global gradient norm (detectron2's CLIP_GRADIENTS clips per parameter)."""

    def __init__(self, run: _Run):
        self.run = run

    def after_backward(self) -> None:
        run, iteration = self.run, self.trainer.iter + 1
        if not all(math.isfinite(value) for value in run.losses.values()):
            raise TrainingDiverged(iteration, dict(run.losses), run.last_good)
        completed = iteration - 1  # optimizer steps behind the weights that gave this loss
        if completed and completed % run.config.checkpoint_period == 0:
            run.last_good = run.save(self.trainer.model, LAST_CHECKPOINT)
        if run.config.clip_grad_norm:
            parameters = [p for p in self.trainer.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(parameters, run.config.clip_grad_norm)


class _ModelSelection(HookBase):
    """Every ``TEST.EVAL_PERIOD`` and at the last iteration: evaluate on the val split (the
    COCO protocol's detections, as ``metrics.py`` counts them) and keep the weights with the
    best AP50."""

    def __init__(self, run: _Run):
        self.run = run

    def after_step(self) -> None:
        trainer, run = self.trainer, self.run
        iteration = trainer.iter + 1
        if iteration % trainer.cfg.TEST.EVAL_PERIOD and iteration != trainer.max_iter:
            return
        scored = Detectron2Detector(trainer.model, run.config)
        with (scored.output_limits(COCO_SCORE_FLOOR, COCO_MAX_DETECTIONS),
              contextlib.redirect_stdout(io.StringIO())):  # pycocotools prints its tables
            metrics = val_metrics(trainer.test(trainer.cfg, trainer.model))
        run.history.append({"iteration": iteration, **metrics})
        score = metrics.get(VAL_METRIC, -1.0)
        if run.best is None or score > run.best:
            run.best, run.best_iteration = score, iteration
            run.save(trainer.model, BEST_CHECKPOINT)


class _Progress(HookBase):
    """Counts images and training time (``IterationTimer``'s step time, validation excluded)
    and reports a ``TrainProgress`` after every iteration."""

    def __init__(self, run: _Run):
        self.run = run

    def before_train(self) -> None:
        self.run.started = time.perf_counter()

    def after_step(self) -> None:
        trainer, run, storage = self.trainer, self.run, self.trainer.storage
        iteration = trainer.iter + 1
        run.train_seconds += storage.history("time").latest()
        run.images_seen += trainer.cfg.SOLVER.IMS_PER_BATCH
        if run.on_progress is None:
            return
        validated = run.history[-1] if run.history else {}
        run.on_progress(TrainProgress(
            iteration=iteration, iterations=trainer.max_iter, losses=dict(run.losses),
            lr=storage.history("lr").latest(),
            images_per_second=run.images_seen / run.train_seconds,
            elapsed_s=time.perf_counter() - run.started,
            val_metrics=({k: v for k, v in validated.items() if k != "iteration"}
                         if validated.get("iteration") == iteration else None),
        ))


class CarsdepoTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer with carsdepo's augmentation, optimizer, evaluators and
    hooks (no periodic writers: progress goes to ``on_progress``)."""

    def __init__(self, cfg: CfgNode, run: _Run):
        self.run = run  # before DefaultTrainer.__init__, which calls build_hooks
        super().__init__(cfg)
        self._trainer.register_hooks([_LossGuard(run)])  # after_backward fires on the inner loop

    def train(self) -> None:
        recorder = self.model.register_forward_hook(self.run.record_losses)
        try:
            super().train()
        except FloatingPointError as error:  # detectron2's own check on proposals and losses
            raise TrainingDiverged(self.iter + 1, {"total": math.nan}, self.run.last_good)\
                from error
        finally:
            recorder.remove()

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        augmentations = detection_utils.build_augmentation(cfg, is_train=True)  # resize, flip
        photometric = []  # same order as the torchvision backend: contrast, then brightness
        if cfg.CARSDEPO.CONTRAST:
            photometric.append(T.RandomContrast(1 - cfg.CARSDEPO.CONTRAST,
                                                1 + cfg.CARSDEPO.CONTRAST))
        if cfg.CARSDEPO.BRIGHTNESS:
            photometric.append(T.RandomBrightness(1 - cfg.CARSDEPO.BRIGHTNESS,
                                                  1 + cfg.CARSDEPO.BRIGHTNESS))
        augmentations[1:1] = photometric
        mapper = DatasetMapper(cfg, is_train=True, augmentations=augmentations)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        if cfg.CARSDEPO.OPTIMIZER == "sgd":
            return super().build_optimizer(cfg, model)
        parameters = get_default_optimizer_params(
            model, base_lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        )
        return torch.optim.AdamW(parameters, lr=cfg.SOLVER.BASE_LR,
                                 weight_decay=cfg.SOLVER.WEIGHT_DECAY)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> DatasetEvaluator:
        return DatasetEvaluators([
            CocoAP50Evaluator(dataset_name, tasks=("bbox",), distributed=False),
            NoneAnswerEvaluator(dataset_name, cfg.CARSDEPO.SCORE_THRESHOLD),
        ])

    def build_hooks(self) -> list[HookBase]:
        return [
            hooks.IterationTimer(warmup_iter=0),  # first: times the step alone
            hooks.LRScheduler(),
            _ModelSelection(self.run) if self.cfg.DATASETS.TEST else None,
            _Progress(self.run),  # last: sees this iteration's validation
        ]


class Detectron2Backend(DetectorBackend):
    name = "detectron2"
    detector_class = Detectron2Detector

    @classmethod
    def refusals(cls, config: DetectorConfig) -> list[str]:
        reasons = []
        if config.synthetic_pretrain_iterations:
            reasons.append("synthetic pretraining is the torchvision backend's: train with "
                           "synthetic_pretrain_iterations=0")
        if config.time_budget_s:
            reasons.append("a training time budget is the torchvision backend's (detectron2's "
                           "trainer runs a fixed number of iterations): train with "
                           "time_budget_s=0")
        if config.work_side:
            reasons.append(
                "the detectron2 backend trains on whole images: native-resolution crops "
                "(work_side) are the torchvision backend's; train with work_side=0 (a trained "
                "detectron2 model still predicts in tiles when its config sets work_side)")
        if config.ema_decay:
            reasons.append("an average of the weights (ema_decay) is the torchvision backend's: "
                           "train with ema_decay=0")
        if config.copy_paste:
            reasons.append("copy-paste augmentation (copy_paste) is the torchvision backend's: "
                           "train with copy_paste=0")
        return reasons

    def _fit(
        self,
        train: LoadedSplit,
        val: LoadedSplit | None,
        config: DetectorConfig,
        workdir: Path,
        on_progress: Callable[[TrainProgress], None] | None,
        start_from: TrainedDetector | None = None,
    ) -> Detectron2Detector:
        if start_from is not None:
            raise ConfigError("fine-tuning a trained model is the torchvision backend's for now: "
                              "train the detectron2 backend with start_from_champion false")
        _leave_logging_to_the_host()
        with registered_splits(train, val, workdir) as (train_name, val_name):
            cfg = detectron2_cfg(config, train_dataset=train_name, val_dataset=val_name,
                                 output_dir=str(workdir))
            seed_all_rng(config.seed)  # detectron2's transforms draw from numpy's global rng
            run = _Run(config, workdir, on_progress)
            trainer = CarsdepoTrainer(cfg, run)
            trainer.train()
        return _kept_detector(trainer.model, run, train, val)


def _kept_detector(model: nn.Module, run: _Run, train: LoadedSplit,
                   val: LoadedSplit | None) -> Detectron2Detector:
    """The best weights on val (else the last), with the summary, saved as ``last``."""
    config = run.config
    summary = TrainingSummary(
        backend=config.backend, iterations=config.iterations, images_seen=run.images_seen,
        wall_s=round(time.perf_counter() - run.started, 3),
        images_per_second=round(run.images_seen / run.train_seconds, 3),
        final_losses=run.losses, best_iteration=run.best_iteration, best_val_metric=run.best,
        val_metric_name=f"val_{VAL_METRIC}", val_history=run.history,
        train_images=len(train.records), val_images=len(val.records) if val else 0,
    )
    if run.best_iteration is not None and run.best_iteration != config.iterations:
        state = torch.load(run.workdir / BEST_CHECKPOINT / WEIGHTS_FILE,
                           map_location=config.device, weights_only=True)
        model.load_state_dict(state)
    detector = Detectron2Detector(model.eval(), config, summary)
    detector.save(run.workdir / LAST_CHECKPOINT)
    return detector


def _leave_logging_to_the_host() -> None:
    """DefaultTrainer installs its own DEBUG handler on stdout unless the "detectron2" logger
    already logs INFO; give it that level so its records go to the host's handlers instead."""
    logger = logging.getLogger("detectron2")
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
