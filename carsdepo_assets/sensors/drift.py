"""``drift_sensor``: acts on each new retraining decision.

retrain -> ``training_job`` (train, evaluate, gate, promote) on the latest curated dataset;
experiment -> ``experimentation_job`` for the batch (a sweep, never promoted by itself);
no_action / no_reference -> nothing. The cursor is the storage id of the last decision acted on,
so every decision is handled exactly once, in order.
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


def run_request_for(action: str, batch: str, storage_id: int,
                    moved_signals: str = "") -> RunRequest | None:
    """The run a decision calls for (None when it calls for nothing); the run is tagged with
    the signals that moved (light, content, outputs) when the decision names them."""
    tags = {"carsdepo/decision": action, "carsdepo/drifted_batch": batch}
    if moved_signals:
        tags["carsdepo/moved_signals"] = moved_signals
    if action == RETRAIN:
        return RunRequest(run_key=f"retrain-{storage_id}", job_name=training_job.name, tags=tags)
    if action == EXPERIMENT:
        return RunRequest(run_key=f"experiment-{storage_id}", job_name=experimentation_job.name,
                          partition_key=batch, tags=tags)
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
    requests = []
    for record in records:
        materialization = record.asset_materialization
        action = materialization.metadata["action"].value
        moved = materialization.metadata.get("moved_signals")
        moved = moved.value if moved is not None else ""
        request = run_request_for(action, materialization.partition, record.storage_id, moved)
        context.log.info(f"batch {materialization.partition}: {action}"
                         + (f" (signals moved: {moved})" if moved else ""))
        if request is not None:
            requests.append(request)
    return SensorResult(run_requests=requests, cursor=str(records[-1].storage_id))
