"""``freshness_sensor``: evaluates the freshness check of the champion every hour."""

import time

from dagster import DefaultSensorStatus, RunRequest, sensor

from carsdepo_assets.jobs import freshness_job


@sensor(
    job=freshness_job,
    minimum_interval_seconds=3600,
    default_status=DefaultSensorStatus.RUNNING,
    description="Runs champion_not_stale (is the champion older than the limit while newer "
    "annotations exist?) once an hour; the result shows on deployed_model's checks.",
)
def freshness_sensor() -> RunRequest:
    # one run per hour: the run key dedupes ticks within the same hour
    return RunRequest(run_key=f"freshness-{int(time.time() // 3600)}")
