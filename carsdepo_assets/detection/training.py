"""The training loop for torch detection models that take ``model(images, targets) -> losses``.

CPU-friendly: no worker processes (images are decoded in the loop; on two cores a worker would
only compete with the model), a fixed thread count, a deterministic seed for sampling,
augmentation and initialisation. Every iteration reports progress; every ``eval_period`` the
validation split picks the best weights by AP50; every ``checkpoint_period`` the current
weights are kept — but only weights that have just produced a finite loss, so that when the
loss diverges the checkpoint on disk is known to be good.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from carsdepo_assets.detection.backbones import BackboneBody
from carsdepo_assets.detection.backends import (
    TrainedDetector,
    TrainingDiverged,
    TrainingSummary,
    TrainProgress,
    predict_records,
)
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.copy_paste import DamageBank
from carsdepo_assets.detection.data import (
    Augmentation,
    CocoSplit,
    LoadedSplit,
    Pasting,
    crop_sample,
    load_split,
    repeat_factors,
    training_sample,
)
from carsdepo_assets.detection.metrics import (
    COCO_MAX_DETECTIONS,
    COCO_SCORE_FLOOR,
    evaluate_detections,
)
from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CLASS_NAMES

VAL_METRIC = "AP50"
LR_SCALE = "lr_scale"  # a parameter group's share of the scheduled learning rate
LAST_CHECKPOINT = "last"
BEST_CHECKPOINT = "best"


def fit(
    model: nn.Module,
    train: LoadedSplit,
    val: LoadedSplit | None,
    config: DetectorConfig,
    workdir: Path,
    as_detector: Callable[[TrainingSummary | None], TrainedDetector],
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainedDetector:
    """Train ``model`` in place and return the kept detector (best on val, else the last).

    ``as_detector`` wraps the model being trained as a ``TrainedDetector`` (for validation
    predictions and checkpoints).
    """
    device = torch.device(config.device)
    model.to(device)
    rng = np.random.default_rng(config.seed)
    augmentation = Augmentation(config.brightness, config.contrast, config.hflip)
    pasting = Pasting(DamageBank(train.records), config.copy_paste) if config.copy_paste \
        else None
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(_parameter_groups(model, config), config)
    batches = _batch_indices(repeat_factors(train.records, config.repeat_factor_threshold),
                             config.batch_size, rng)
    checkpoints = Path(workdir)
    last_good: Path | None = None
    best: float | None = None
    best_iteration: int | None = None
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict] = []
    losses: dict[str, float] = {}
    train_seconds, images_seen, started = 0.0, 0, time.perf_counter()
    schedule = Schedule(config)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    iteration = 0

    while not schedule.done:
        iteration += 1
        step_started = time.perf_counter()
        model.train()
        samples = [crop_sample(train.records[i], config, augmentation, rng, pasting)
                   if config.work_side
                   else training_sample(train.records[i], config.min_size, config.max_size,
                                        augmentation, rng, pasting)
                   for i in next(batches)]
        images = [image.to(device) for image, _ in samples]
        targets = [{k: v.to(device) for k, v in target.items()} for _, target in samples]
        loss_terms = model(images, targets)
        total = sum(loss_terms.values())
        losses = {name: float(value.detach()) for name, value in loss_terms.items()}
        losses["total"] = float(total.detach())
        if not all(math.isfinite(value) for value in losses.values()):
            raise TrainingDiverged(iteration, losses, last_good)
        completed = iteration - 1  # optimizer steps behind the weights that gave this loss
        if completed and completed % config.checkpoint_period == 0:
            last_good = as_detector(None).save(checkpoints / LAST_CHECKPOINT)
        lr = schedule.learning_rate(iteration, step_started - started)
        for group in optimizer.param_groups:
            group["lr"] = lr * group[LR_SCALE]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
        optimizer.step()
        if average is not None:
            average.update()
        train_seconds += time.perf_counter() - step_started
        images_seen += len(images)

        val_metrics = None
        if val is not None and (iteration % config.eval_period == 0 or schedule.done):
            with average.applied() if average else contextlib.nullcontext():
                val_metrics = validate(as_detector(None), val)
                history.append({"iteration": iteration, **val_metrics})
                score = val_metrics.get(VAL_METRIC, -1.0)
                if best is None or score > best:
                    best, best_iteration = score, iteration
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    as_detector(None).save(checkpoints / BEST_CHECKPOINT)
        if on_progress is not None:
            on_progress(TrainProgress(
                iteration=iteration, iterations=schedule.iterations, losses=losses, lr=lr,
                images_per_second=images_seen / train_seconds,
                elapsed_s=time.perf_counter() - started, val_metrics=val_metrics,
            ))

    summary = TrainingSummary(
        backend=config.backend, iterations=iteration, images_seen=images_seen,
        wall_s=round(time.perf_counter() - started, 3),
        images_per_second=round(images_seen / train_seconds, 3), final_losses=losses,
        best_iteration=best_iteration, best_val_metric=best,
        val_metric_name=f"val_{VAL_METRIC}", val_history=history,
        train_images=len(train.records), val_images=len(val.records) if val else 0,
        stopped_by=schedule.stopped_by,
    )
    if best_iteration is not None and (best_iteration != iteration or average is not None):
        model.load_state_dict(best_state)
    elif average is not None:  # no validation chose: the average of the last weights
        average.copy_to_model()
    detector = as_detector(summary)
    detector.save(checkpoints / LAST_CHECKPOINT)
    return detector


def pretrain_on_synthetic_panels(
    model: nn.Module,
    config: DetectorConfig,
    workdir: Path,
    as_detector: Callable[[TrainingSummary | None], TrainedDetector],
) -> Path:
    """Train ``model`` in place for ``config.synthetic_pretrain_iterations`` on freshly generated
    synthetic panels (issue 12's item 6: can the project's own panels give the new layers a
    start that real photos build on?). No validation: the real training that follows picks its
    weights on real photos. Returns the folder of the panels and the pretraining checkpoint."""
    folder = Path(workdir) / "synthetic-pretraining"
    generate_dataset(folder, config.synthetic_pretrain_images, seed=config.seed)
    panels = load_split(CocoSplit.from_folder(folder), require_every_class=True)
    # its own fixed length: the time budget is the real photos' training that follows
    fit(model, panels, None, config.replace(iterations=config.synthetic_pretrain_iterations,
                                            time_budget_s=0.0, copy_paste=0), folder,
        as_detector)
    return folder


def validate(detector: TrainedDetector, val: LoadedSplit) -> dict[str, float]:
    """COCO AP/AP50 (overall and per class, by the COCO protocol) and the "None" accuracy of
    ``detector`` on ``val`` (computed by metrics.py), without the mirrored pass of
    ``config.flip_tta``: it would double each validation's share of a time budget."""
    with detector.output_limits(COCO_SCORE_FLOOR, COCO_MAX_DETECTIONS):
        predictions = predict_records(detector, val, single_pass=True)
    result = evaluate_detections(val.coco_ground_truth(), predictions,
                                 detector.config.score_threshold)
    metrics = result.flat_metrics()
    wanted = ("AP", "AP50", "none_accuracy", *(f"AP50_{name}" for name in CLASS_NAMES))
    return {name: metrics[name] for name in wanted if name in metrics}


def _parameter_groups(model: nn.Module, config: DetectorConfig) -> list[dict]:
    """The trainable parameters in two groups: the backbone body (pretrained features, which a
    full learning rate on a few hundred photos mostly disturbs) at ``backbone_lr_factor`` of
    the rate, everything built new for detection (FPN, RPN, heads) at the full rate."""
    body = {id(p) for module in model.modules() if isinstance(module, BackboneBody)
            for p in module.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in body], LR_SCALE: 1.0},
        {"params": [p for p in trainable if id(p) in body], LR_SCALE: config.backbone_lr_factor},
    ]
    return [group for group in groups if group["params"]]


def _optimizer(groups: list[dict], config: DetectorConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


class WeightAverage:
    """An exponential moving average of the model's weights (and buffers), what validation and
    the saved model use when ``config.ema_decay`` is set: the average of the last few hundred
    steps is often better than the last step's weights. The decay ramps up from 0 as
    (1 + n) / (10 + n) over the first steps, so the average is not anchored to the start."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = model
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()
                      if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = self.model.state_dict()
        for key, average in self.state.items():
            average.lerp_(live[key].detach(), weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, the live ones again after."""
        live = {k: v.detach().clone() for k, v in self.model.state_dict().items()
                if k in self.state}
        self.copy_to_model()
        try:
            yield
        finally:
            self.model.load_state_dict(live, strict=False)

    def copy_to_model(self) -> None:
        self.model.load_state_dict(self.state, strict=False)


class Schedule:
    """When training ends and the learning rate on the way: a linear warm-up from lr/100 over
    ``warmup_iterations``, then a cosine decay to lr/100 at the end — the last iteration, or,
    with ``time_budget_s``, the moment the budget is spent if that comes first. Progress is the
    larger of the share of iterations done and the share of the budget spent, so a run on a
    slower (or busier) machine decays over fewer iterations instead of running over."""

    def __init__(self, config: DetectorConfig):
        self.config = config
        self.progress = 0.0
        self.warmup_end = 0.0  # progress when the warm-up ended
        self.done = False
        self.stopped_by = "iterations"

    @property
    def iterations(self) -> int:
        return self.config.iterations

    def learning_rate(self, iteration: int, elapsed_s: float) -> float:
        """The rate for ``iteration`` (1-based), started ``elapsed_s`` into training; marks the
        schedule done when this is the last iteration."""
        config = self.config
        by_time = elapsed_s / config.time_budget_s if config.time_budget_s else 0.0
        self.progress = min(1.0, max(iteration / config.iterations, by_time))
        if iteration >= config.iterations or by_time >= 1.0:
            self.done = True
            self.stopped_by = "iterations" if iteration >= config.iterations else "time budget"
        floor = config.lr / 100
        if iteration <= config.warmup_iterations:
            self.warmup_end = self.progress
            return floor + (config.lr - floor) * iteration / config.warmup_iterations
        after_warmup = (self.progress - self.warmup_end) / max(1e-9, 1.0 - self.warmup_end)
        return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * after_warmup))


def _batch_indices(factors: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Endless shuffled batches. Every image is seen once per epoch, or, with repeat factors
    above 1 (``data.repeat_factors``), floor(r) times plus once more with probability r - floor(r)
    (LVIS's stochastic rounding), drawn anew each epoch."""
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = _epoch(factors, rng)
            batch.append(order.pop())
        yield batch


def _epoch(factors: np.ndarray, rng: np.random.Generator) -> list[int]:
    if (factors == 1).all():
        return rng.permutation(len(factors)).tolist()
    copies = np.floor(factors).astype(int) + (rng.random(len(factors)) < factors % 1)
    return rng.permutation(np.repeat(np.arange(len(factors)), copies)).tolist()
