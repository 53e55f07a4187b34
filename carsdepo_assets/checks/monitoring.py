"""Checks on monitoring: how far a batch drifted, and whether the champion is stale."""

# No `from __future__ import annotations`: Dagster reads the resource annotations.
# MLflow is imported by the check when it runs: the code location loads without it.

import json
from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    asset_check,
)

from carsdepo_assets.assets.monitoring import drift_report
from carsdepo_assets.labeling.history import load_latest_snapshot
from carsdepo_assets.monitoring.freshness import model_staleness
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.monitoring import DriftPolicy
from carsdepo_assets.resources.state import CarsdepoHome


@asset_check(
    asset=drift_report,
    partitions_def=batch_partitions,
    description="WARN when the batch deviation reaches retrain_at, ERROR above experiment_at.",
)
def drift_within_policy(
    context: AssetCheckExecutionContext, carsdepo_home: CarsdepoHome, drift_policy: DriftPolicy
) -> AssetCheckResult:
    path = carsdepo_home.layout.drift_report_path(context.partition_key)
    if not path.is_file():
        return AssetCheckResult(passed=False, description=f"no drift report at {path}")
    report = json.loads(path.read_text())
    deviation = float(report.get("deviation", 0.0))
    if report.get("status") == "no_reference":
        return AssetCheckResult(passed=True, description="no reference profile yet: not compared")
    severity = (
        AssetCheckSeverity.ERROR if deviation > drift_policy.experiment_at
        else AssetCheckSeverity.WARN
    )
    return AssetCheckResult(
        passed=deviation < drift_policy.retrain_at,
        severity=severity,
        description=f"deviation {deviation:.1f}% (retrain at {drift_policy.retrain_at:g}%, "
        f"experiment above {drift_policy.experiment_at:g}%); signals moved: "
        f"{', '.join(report.get('moved_signals', [])) or 'none'}",
        metadata={"deviation": deviation, "drifted": ", ".join(report.get("drifted", [])),
                  "moved_signals": ", ".join(report.get("moved_signals", [])) or "none"},
    )


def newest_annotation_time(folder) -> datetime | None:
    """When the newest annotation of the latest snapshot was created or updated."""
    snapshot = load_latest_snapshot(folder)
    times = [
        datetime.fromisoformat(image.updated_at) for image in (snapshot.images if snapshot else [])
        if image.updated_at
    ]
    return max((t if t.tzinfo else t.replace(tzinfo=UTC) for t in times), default=None)


@asset_check(
    asset=AssetKey("deployed_model"),
    description="The champion is not older than champion_max_age_days while newer annotations "
    "wait to be learnt (evaluated by freshness_sensor).",
)
def champion_not_stale(
    carsdepo_home: CarsdepoHome, model_registry: ModelRegistry, drift_policy: DriftPolicy
) -> AssetCheckResult:
    from mlflow.tracking import MlflowClient

    from carsdepo_assets.detection.champion import current_champion

    model_registry.connect()
    champion = current_champion(model_registry.model_name)
    champion_at = None
    if champion is not None:
        version = MlflowClient().get_model_version(model_registry.model_name, champion)
        champion_at = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
    newest_annotation = newest_annotation_time(carsdepo_home.layout.annotations)
    stale, reason = model_staleness(
        champion_at, newest_annotation, datetime.now(UTC), drift_policy.champion_max_age_days
    )
    return AssetCheckResult(
        passed=not stale,
        severity=AssetCheckSeverity.WARN,
        description=reason,
        metadata={"champion_version": champion or "none"},
    )
