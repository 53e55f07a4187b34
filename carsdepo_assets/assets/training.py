"""``detector``: train on the curated dataset, track the run in MLflow, register a challenger."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
# MLflow and torch are imported by the functions that use them: the code location loads
# without them.

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, Output, asset
from PIL import Image
from pydantic import Field

from carsdepo_assets.assets.metadata import mlflow_links, rounded
from carsdepo_assets.datasets import CuratedDataset, load_dataset
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.executors import TRAINING_OP_TAGS
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.visual import contact_sheet, draw_boxes, markdown_image, png_bytes

if TYPE_CHECKING:
    from carsdepo_assets.detection.backends import TrainedDetector


class DetectorTrainingConfig(Config):
    """The detector config for one training run: a preset plus the fields people change most.

    Unset fields keep the preset's value (see carsdepo_assets/detection/config.py)."""

    preset: str = Field(
        default="cpu",
        description="cpu (default, minutes on 2 cores), real_cpu (real photos, ~1 h on 2 "
        "cores) or gpu.",
    )
    backend: str = Field(default="auto", description="auto | detectron2 | torchvision")
    iterations: int | None = Field(default=None, description="Training iterations.")
    time_budget_s: float | None = Field(
        default=None, description="Stop training after this many seconds even before "
        "`iterations` (the learning rate decays over whichever runs out first); 0: no budget.")
    batch_size: int | None = Field(default=None, description="Images per iteration.")
    lr: float | None = Field(default=None, description="Learning rate.")
    min_size: int | None = Field(default=None, description="Short side of the input, px.")
    max_size: int | None = Field(default=None, description="Cap on the long side, px.")
    pretrained: bool = Field(default=True, description="Start from ImageNet weights.")
    weights_path: str | None = Field(default=None, description="Local backbone weights file.")
    brightness: float | None = Field(default=None, description="Brightness augmentation.")
    contrast: float | None = Field(default=None, description="Contrast augmentation.")
    seed: int = Field(default=0, description="Random seed.")
    overrides: str = Field(
        default="{}",
        description='Further DetectorConfig fields as a JSON object, applied last (e.g. '
        '{"work_side": 0} to train real_cpu without native-resolution crops).',
    )
    num_threads: int | None = Field(
        default=None, description="torch threads; unset: the cores other processes leave free."
    )
    log_every: int = Field(default=25, description="Log progress every N iterations.")
    start_from_champion: bool = Field(
        default=False,
        description="Fine-tune the champion (its architecture, anchors and weights) for "
        "`iterations` instead of training from ImageNet weights: a retrain on new labels "
        "needs far fewer iterations. Without a champion, training starts from scratch.",
    )

    def detector_config(self) -> DetectorConfig:
        overrides = {
            name: getattr(self, name)
            for name in ("backend", "iterations", "time_budget_s", "batch_size", "lr",
                         "min_size", "max_size", "pretrained", "weights_path", "brightness",
                         "contrast", "seed", "num_threads")
            if getattr(self, name) is not None
        }
        try:
            extra = json.loads(self.overrides)
        except ValueError as error:
            raise ConfigError(f"overrides is not JSON: {error}") from None
        if not isinstance(extra, dict):
            raise ConfigError("overrides must be a JSON object of DetectorConfig fields")
        return DetectorConfig.preset(self.preset, **{**overrides, **extra})


@dataclass
class TrackedTraining:
    """A detector trained inside the active MLflow run, and what a person wants to see of it."""

    trained: "TrainedDetector"
    saved: Path
    config: DetectorConfig
    dataset: CuratedDataset
    run_id: str | None
    tags: dict[str, str]
    metadata: dict


def train_tracked(
    context: AssetExecutionContext,
    config: DetectorTrainingConfig,
    dataset: CuratedDataset,
    workdir: Path,
    extra_tags: dict[str, str] | None = None,
    start_from: tuple[str, "TrainedDetector"] | None = None,
) -> TrackedTraining:
    """Train on ``dataset`` inside the active MLflow run: parameters, losses, validation
    metrics, the training summary and sample predictions go to MLflow; progress to the run log.

    Shared by ``detector`` and the experimentation sweep. ``start_from`` is (name, detector) of
    a model to fine-tune."""
    import mlflow

    from carsdepo_assets.detection.backends import (
        TrainingDiverged,
        TrainProgress,
        resolve_config,
        train_detector,
    )
    from carsdepo_assets.detection.data import CocoSplit, DatasetError

    try:
        resolved = resolve_config(config.detector_config())
    except ConfigError as error:
        raise Failure(f"detector config: {error}") from error
    run = mlflow.active_run()
    tags = {
        "carsdepo.dataset_version": dataset.version,
        "carsdepo.backend": resolved.backend,
        **(extra_tags or {}),
    }
    mlflow.set_tags(tags)
    mlflow.log_params({f"detector.{k}": v for k, v in resolved.to_dict().items()})
    mlflow.log_params({"dataset_version": dataset.version, "backend": resolved.backend,
                       "start_from": start_from[0] if start_from else "ImageNet weights"})
    context.log.info(
        f"training {resolved.backend} detector on dataset {dataset.version} "
        f"({resolved.iterations} iterations"
        f"{f' or {resolved.time_budget_s:.0f} s' if resolved.time_budget_s else ''} from "
        f"{start_from[0] if start_from else 'ImageNet weights'}, batch {resolved.batch_size}, "
        f"input {resolved.min_size}-{resolved.max_size}px, device {resolved.device}, "
        f"{resolved.num_threads} torch threads"
        f"{', re-checked as training goes' if resolved.adapt_threads else ''})"
    )

    def on_progress(progress: TrainProgress) -> None:
        step = progress.iteration
        if step % config.log_every == 0 or step == progress.iterations:
            mlflow.log_metrics({f"loss_{k}": v for k, v in progress.losses.items()}, step=step)
            context.log.info(
                f"iteration {step}/{progress.iterations}: loss {progress.losses['total']:.3f}, "
                f"{progress.images_per_second:.1f} images/s, {progress.elapsed_s:.0f}s elapsed"
            )
        if progress.val_metrics:
            mlflow.log_metrics({f"val_{k}": v for k, v in progress.val_metrics.items()}, step=step)
            context.log.info(f"iteration {step}: validation {progress.val_metrics}")
        if progress.note:
            context.log.info(f"iteration {step}: {progress.note}")

    started = time.perf_counter()
    try:
        trained = train_detector(
            CocoSplit(*dataset.train), CocoSplit(*dataset.val), resolved, workdir, on_progress,
            start_from[1] if start_from else None,
        )
    except (DatasetError, ConfigError) as error:
        raise Failure(f"dataset {dataset.version} cannot be trained on: {error}") from error
    except TrainingDiverged as error:
        raise Failure(str(error)) from error
    saved = trained.save(workdir / "detector")
    summary = trained.summary.to_dict() if trained.summary else {}
    mlflow.log_dict(summary, "training_summary.json")
    # what training used: anchors learned at its start are in here, not in the params above
    mlflow.log_dict(trained.config.to_dict(), "detector_config.json")
    coverage = summary.get("anchor_coverage", {})
    mlflow.log_metrics({f"anchor_coverage_{kind}_{name}": value
                        for name, shares in coverage.items()
                        for kind, value in shares.items() if kind != "boxes" and value is not None})
    context.log.info(f"anchors {trained.config.anchor_sizes} x {trained.config.aspect_ratios}; "
                     f"coverage of the training boxes {coverage}")
    metadata = {
        "backend": resolved.backend,
        "dataset_version": dataset.version,
        "started_from": start_from[0] if start_from else "ImageNet weights",
        "train_wall_s": round(time.perf_counter() - started, 1),
        "train_images_per_s": rounded(summary.get("images_per_second", 0.0)),
        "train_iterations": summary.get("iterations"),
        "train_stopped_by": summary.get("stopped_by", "iterations"),
        "best_val_AP50": rounded(summary.get("best_val_metric")),
        "config": MetadataValue.json(trained.config.to_dict()),
        "anchor_coverage": MetadataValue.json(coverage),
    }
    if points := summary.get("operating_points"):
        context.log.info(f"operating points chosen on val for precision >= "
                         f"{resolved.operating_precision:g}: {points}")
        mlflow.log_metrics({f"operating_{key}_{label}": value for label, point in points.items()
                            for key, value in point.items() if isinstance(value, float)})
        metadata["operating_points"] = MetadataValue.json(points)
    samples = sample_predictions_png(trained, dataset.coco("val"), dataset.image_root)
    if samples:
        mlflow.log_image(Image.open(io.BytesIO(samples)), "sample_predictions.png")
        metadata["sample_predictions"] = MetadataValue.md(markdown_image(samples, "predictions"))
    return TrackedTraining(trained, saved, resolved, dataset, run.info.run_id if run else None,
                          tags, metadata)


def sample_predictions_png(
    trained: "TrainedDetector", coco: dict, image_root: Path, count: int = 6
) -> bytes | None:
    """A contact sheet of ``count`` images with the detector's answers drawn on them."""
    images = coco["images"][:count]
    if not images:
        return None
    store = ImageStore(image_root)
    pictures = [store.open(entry["sha256"]) for entry in images]
    drawn = []
    for picture, found in zip(pictures, trained.predict(pictures), strict=True):
        kept = [d for d in found if d.score >= trained.config.score_threshold]
        drawn.append(draw_boxes(picture, [d.box for d in kept], [d.label for d in kept],
                                [d.score for d in kept]))
    return png_bytes(contact_sheet(drawn, columns=3, thumb_size=(320, 240)))


@asset(
    group_name="training",
    ins={"curated_dataset": AssetIn()},
    required_resource_keys={"mlflow", "model_registry", "carsdepo_home"},
    op_tags=TRAINING_OP_TAGS,
    description=(
        "A damage detector trained on curated_dataset's train split (val split picks the best "
        "weights), tracked in the Dagster run's MLflow run and registered as a new version with "
        "alias 'challenger'."
    ),
)
def detector(
    context: AssetExecutionContext, config: DetectorTrainingConfig, curated_dataset: str
) -> Output[dict]:
    from carsdepo_assets.detection.champion import current_champion
    from carsdepo_assets.prediction.pyfunc import load_registered_detector, log_detector_model

    model_name = context.resources.model_registry.model_name
    dataset = load_dataset(Path(curated_dataset))
    workdir = context.resources.carsdepo_home.layout.models / context.run_id
    champion = current_champion(model_name) if config.start_from_champion else None
    start_from = None
    if champion is not None:
        start_from = (f"{model_name} v{champion}",
                      load_registered_detector(f"models:/{model_name}/{champion}"))
    run = train_tracked(context, config, dataset, workdir, start_from=start_from)
    info = log_detector_model(run.saved, registered_model_name=model_name, tags=run.tags)
    version = str(info.registered_model_version)
    context.log.info(f"registered {model_name} version {version} as challenger")
    record = {
        "model_name": model_name,
        "version": version,
        "model_uri": f"models:/{model_name}/{version}",
        "run_id": run.run_id,
        "model_id": info.model_id,
        "detector_dir": str(run.saved),
        "dataset_version": dataset.version,
        "backend": run.config.backend,
    }
    return Output(record, metadata={
        "model": f"{model_name} v{version} (alias challenger)",
        **mlflow_links(context.resources.carsdepo_home, model_name, version, run.run_id),
        **run.metadata,
    })
