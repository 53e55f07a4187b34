"""Monitoring: whylogs profiles of the reference and of each batch, drift, and the decision.

Profiles are whylogs binaries under ``profiles/``; drift reports and decisions are also written
as JSON under ``reports/`` so the KPI report and people can read them without Dagster.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.

import json
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from mlflow.tracking import MlflowClient

from carsdepo_assets.datasets import latest_dataset, load_dataset
from carsdepo_assets.detection.champion import current_champion
from carsdepo_assets.fileio import atomic_write_json
from carsdepo_assets.images.ingest import iter_stored_images
from carsdepo_assets.monitoring import drift as drift_statistics
from carsdepo_assets.monitoring.decision import decide
from carsdepo_assets.monitoring.drift import DriftReport, drift_plot
from carsdepo_assets.monitoring.features import iter_image_features, prediction_features
from carsdepo_assets.monitoring.profiles import (
    profile_rows,
    read_profile,
    row_count,
    summary_table,
    write_profile,
)
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.monitoring import DriftPolicy
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout
from carsdepo_assets.visual import markdown_image

GROUP = "monitoring"


def batch_feature_rows(layout: StateLayout, batch: str):
    """Image features of each stored image of the batch, one image in memory at a time, with
    the model-output features when ``batch_predictions`` has answered for the batch."""
    answers = _predictions_by_sha(layout.prediction_path(batch))
    stored = list(iter_stored_images(layout, batch))
    for (sha, _), features in zip(stored, iter_image_features(p for _, p in stored), strict=True):
        if answers:
            features = {**features, **prediction_features(answers.get(sha, "None"))}
        yield features


def _predictions_by_sha(path: Path) -> dict:
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["sha256"]: row["damage"] for row in rows if "sha256" in row and "damage" in row}


@asset(
    group_name=GROUP,
    deps=[AssetKey("deployed_model"), AssetKey("curated_dataset")],
    kinds={"whylogs"},
    description=(
        "whylogs profile of the image features of the train split the champion was trained on "
        "(the latest curated dataset while there is no champion): what 'normal' looks like."
    ),
)
def reference_profile(
    context: AssetExecutionContext, carsdepo_home: CarsdepoHome, model_registry: ModelRegistry
) -> MaterializeResult:
    layout = carsdepo_home.layout
    model_registry.connect()
    champion = current_champion(model_registry.model_name)
    dataset = None
    if champion is not None:
        tags = MlflowClient().get_model_version(model_registry.model_name, champion).tags
        version = tags.get("carsdepo.dataset_version")
        if version and layout.dataset_folder(version).is_dir():
            dataset = load_dataset(layout.dataset_folder(version))
    source = f"champion v{champion}'s dataset" if dataset else "latest curated dataset"
    dataset = dataset or latest_dataset(layout)
    if dataset is None:
        raise Failure("no curated dataset yet: materialize curated_dataset first")
    train = dataset.coco("train")
    paths = [dataset.image_root / image["file_name"] for image in train["images"]]
    if not paths:
        raise Failure(f"dataset {dataset.version} has an empty train split: no reference")
    context.log.info(f"profiling {len(paths)} train images of dataset {dataset.version}")
    view = profile_rows(iter_image_features(paths))
    write_profile(view, layout.reference_profile_path())
    return MaterializeResult(metadata={
        "rows": row_count(view),
        "dataset_version": dataset.version,
        "source": source,
        "champion_version": champion or "none",
        "path": MetadataValue.path(str(layout.reference_profile_path())),
        "summary": MetadataValue.md(summary_table(view)),
    })


@asset(
    group_name=GROUP,
    partitions_def=batch_partitions,
    deps=[AssetKey("raw_images")],
    kinds={"whylogs"},
    description="whylogs profile of a batch's image features (and model outputs when the "
    "batch has predictions), streamed one image at a time.",
)
def batch_profile(context: AssetExecutionContext, carsdepo_home: CarsdepoHome) -> MaterializeResult:
    layout = carsdepo_home.layout
    batch = context.partition_key
    view = profile_rows(batch_feature_rows(layout, batch))
    rows = row_count(view)
    if rows == 0:
        context.log.warning(f"batch {batch} has no stored images: its profile is empty")
    path = layout.batch_profile_path(batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_profile(view, path)
    return MaterializeResult(metadata={
        "rows": rows,
        "path": MetadataValue.path(str(path)),
        "summary": MetadataValue.md(summary_table(view) if rows else "empty batch"),
    })


@asset(
    group_name=GROUP,
    partitions_def=batch_partitions,
    deps=[AssetKey("batch_profile"), AssetKey("reference_profile")],
    description="Per feature: KS statistic and p-value of the batch against the reference; one "
    "batch deviation score in percent (defined in monitoring/drift.py).",
)
def drift_report(
    context: AssetExecutionContext, carsdepo_home: CarsdepoHome, drift_policy: DriftPolicy
) -> Output[DriftReport | None]:
    layout = carsdepo_home.layout
    batch = context.partition_key
    batch_path = layout.batch_profile_path(batch)
    if not batch_path.is_file():
        raise Failure(f"no profile for batch {batch}: materialize batch_profile[{batch}] first")
    reference_path = layout.reference_profile_path()
    if not reference_path.is_file():
        context.log.warning("no reference profile yet: the batch is not compared")
        atomic_write_json(layout.drift_report_path(batch), {"status": "no_reference"})
        return Output(None, metadata={"status": "no reference profile yet", "deviation": 0.0})
    reference, current = read_profile(reference_path), read_profile(batch_path)
    report = drift_statistics.drift_report(reference, current, alpha=drift_policy.alpha)
    atomic_write_json(layout.drift_report_path(batch), report.to_dict())
    metadata = {
        "status": report.status,
        "deviation": round(report.deviation, 2),
        "drifted": ", ".join(item.feature for item in report.drifted) or "none",
        "report": MetadataValue.md(report.to_markdown()),
    }
    drivers = [item.feature for item in report.drivers]
    if drivers:
        plot = drift_plot(reference, current, drivers)
        metadata["distributions"] = MetadataValue.md(markdown_image(plot, "reference vs batch"))
    return Output(report, metadata=metadata)


@asset(
    group_name=GROUP,
    partitions_def=batch_partitions,
    description="What the batch's drift calls for: no_action, retrain (on the latest curated "
    "dataset), experiment (a sweep of detector configs), or no_reference.",
)
def retraining_decision(
    context: AssetExecutionContext,
    carsdepo_home: CarsdepoHome,
    drift_policy: DriftPolicy,
    drift_report: DriftReport | None,
) -> Output[dict]:
    decision = decide(drift_report, drift_policy.retrain_at, drift_policy.experiment_at)
    record = {"batch": context.partition_key, **decision.to_dict()}
    atomic_write_json(carsdepo_home.layout.decision_path(context.partition_key), record)
    context.log.info(f"batch {context.partition_key}: {decision.action} ({decision.reasons[0]})")
    return Output(record, metadata={
        "action": decision.action,
        "deviation": decision.deviation if decision.deviation is not None else -1.0,
        "reasons": MetadataValue.md("\n".join(f"- {reason}" for reason in decision.reasons)),
        "retrain_at": drift_policy.retrain_at,
        "experiment_at": drift_policy.experiment_at,
    })
