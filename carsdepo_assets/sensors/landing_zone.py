"""``landing_zone_sensor``: a new, complete folder under ``landing/`` becomes a batch.

Readiness rules (marker file, quiet period) are in ``images.landing``. The instance's dynamic
partitions are the memory of what was seen: a folder whose name is already a partition is never
added or requested again. (No run keys: they would outlive a deleted partition and silently
block the re-ingestion of a batch dropped in again under the same name.)
"""

# No `from __future__ import annotations`: Dagster reads these annotations (config, resources)
# when the definitions are built.

import time

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from carsdepo_assets.images.landing import scan_landing
from carsdepo_assets.jobs import ingest_job
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME, batch_partitions
from carsdepo_assets.resources.state import CarsdepoHome


@sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a batch partition for each new complete landing/<batch> folder and "
    "runs ingest_job (raw_images) for it.",
)
def landing_zone_sensor(
    context: SensorEvaluationContext, carsdepo_home: CarsdepoHome
) -> SensorResult | SkipReason:
    landing = carsdepo_home.layout.landing
    known = set(context.instance.get_dynamic_partitions(BATCHES_PARTITIONS_NAME))
    folders = scan_landing(landing, known, now=time.time())
    for folder in folders:
        if not folder.ready:
            context.log.info(f"landing/{folder.name} not ingested yet: {folder.waiting_reason}")
    ready = [folder.name for folder in folders if folder.ready]
    if not ready:
        waiting = len(folders)
        return SkipReason(f"no new complete batch folder in {landing} ({waiting} waiting)")
    return SensorResult(
        run_requests=[RunRequest(partition_key=batch) for batch in ready],
        dynamic_partitions_requests=[batch_partitions.build_add_request(ready)],
    )
