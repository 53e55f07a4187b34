"""``drift_sensor``: acts on each new retraining decision.

retrain -> ``training_job`` (train, evaluate, gate, promote) on the latest curated dataset;
experiment -> ``experimentation_job`` for the batch (a sweep, never promoted by itself);
no_action / no_reference -> nothing. The cursor is the storage id of the last decision acted on,
so every decision is handled exactly once, in order. Both jobs work on the latest curated
dataset, so the decisions one tick finds that call for the same job start one run, for the
newest of their batches, tagged with all of them (two sweeps of one dataset would be one sweep
twice).
"""

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from carsdepo_assets.jobs import experimentation_job, training_job
from carsdepo_assets.monitoring.decision import EXPERIMENT, RETRAIN

DECISIONS = AssetKey("retraining_decision")
BATCH_LIMIT = 50


def run_request_for(action: str, batches: list[str], storage_id: int,
                    moved_signals: str = "") -> RunRequest | None:
    """The run that decisions on ``batches`` (oldest first) call for, None when they call for
    nothing; tagged with the batches and the signals that moved (light, content, outputs)."""
    tags = {"carsdepo/decision": action, "carsdepo/drifted_batch": batches[-1],
            "carsdepo/drifted_batches": ", ".join(batches)}
    if moved_signals:
        tags["carsdepo/moved_signals"] = moved_signals
    if action == RETRAIN:
        return RunRequest(run_key=f"retrain-{storage_id}", job_name=training_job.name, tags=tags)
    if action == EXPERIMENT:
        return RunRequest(run_key=f"experiment-{storage_id}", job_name=experimentation_job.name,
                          partition_key=batches[-1], tags=tags)
    return None


@sensor(
    jobs=[training_job, experimentation_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Launches training_job for 'retrain' decisions and experimentation_job for "
    "'experiment' decisions of retraining_decision.",
)
def drift_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=DECISIONS, after_storage_id=after),
        limit=BATCH_LIMIT,
        ascending=True,
    ).records
    if not records:
        return SkipReason("no new retraining decision")
    batches: dict[str, list[str]] = {}  # per action, the batches that call for it, in order
    moved: dict[str, set[str]] = {}
    last_id: dict[str, int] = {}
    for record in records:
        materialization = record.asset_materialization
        action = materialization.metadata["action"].value
        signals = materialization.metadata.get("moved_signals")
        signals = signals.value if signals is not None else ""
        context.log.info(f"batch {materialization.partition}: {action}"
                         + (f" (signals moved: {signals})" if signals else ""))
        batches.setdefault(action, []).append(materialization.partition)
        moved.setdefault(action, set()).update(
            s for s in signals.split(", ") if s and s != "none")
        last_id[action] = record.storage_id
    requests = [request for action in batches if (request := run_request_for(
        action, batches[action], last_id[action], ", ".join(sorted(moved[action]))))]
    return SensorResult(run_requests=requests, cursor=str(records[-1].storage_id))
