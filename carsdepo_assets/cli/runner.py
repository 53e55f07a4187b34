"""The one way commands run carsdepo's jobs: the code location's definitions built on the state
folder the command was given, executed in that folder's Dagster instance (``<state>/dagster``,
configured by the repo's dagster.yaml), so that CLI runs show in the Dagster UI (``make dev``)
exactly like runs launched there. Nothing here reads or writes the process environment.
"""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.state import PROJECT_ROOT, StateLayout

INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"

# Dagster's console logger defaults to DEBUG (every step event); people at a terminal want INFO.
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class RunFailed(RuntimeError):
    """A Dagster run ended in failure; the message names the failed steps and their errors."""


def prepare_dagster_home(layout: StateLayout) -> str:
    """Install the instance config in the state folder's Dagster home (``DAGSTER_HOME`` for
    ``dagster dev``, which the Makefile sets); returns that folder."""
    home = layout.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != INSTANCE_CONFIG.read_bytes():
        shutil.copyfile(INSTANCE_CONFIG, target)
    return str(home)


def local_instance(layout: StateLayout) -> DagsterInstance:
    """The state folder's Dagster instance, opened from its folder."""
    return DagsterInstance.from_config(prepare_dagster_home(layout))


@cache
def definitions_for(layout: StateLayout) -> Definitions:
    """The code location with every resource on ``layout``'s folder."""
    from carsdepo_assets.definitions import build_definitions
    from carsdepo_assets.resources.state import CarsdepoHome

    return build_definitions(CarsdepoHome(path=str(layout.root)))


def add_batch_partition(instance: DagsterInstance, batch: str) -> None:
    if not instance.has_dynamic_partition(BATCHES_PARTITIONS_NAME, batch):
        instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [batch])


def step_failures(result: ExecuteInProcessResult) -> dict[str, str]:
    """The error message of each failed step of a finished run, by step key."""
    return {event.step_key: event.step_failure_data.error.message.strip()
            for event in result.all_events
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error}


def failure_summary(result: ExecuteInProcessResult) -> str:
    """One line naming each failed step and its error."""
    return ("; ".join(f"{step}: {message}" for step, message in step_failures(result).items())
            or "run failed (see the run in the Dagster UI)")


def run_job(
    job_name: str,
    layout: StateLayout,
    *,
    partition_key: str | None = None,
    run_config: dict[str, Any] | None = None,
    instance: DagsterInstance | None = None,
    tags: dict[str, str] | None = None,
    raise_on_failure: bool = True,
    defs: Definitions | None = None,
) -> ExecuteInProcessResult:
    """Execute a job of ``defs`` (default: the code location on ``layout``) in-process,
    recorded in ``instance`` (default: ``layout``'s).

    A failed run raises RunFailed naming the failed steps, unless ``raise_on_failure`` is
    False (for callers to whom a failure is an outcome, e.g. a blocking quality gate)."""
    defs = defs or definitions_for(layout)
    instance = instance or local_instance(layout)
    if partition_key is not None:
        add_batch_partition(instance, partition_key)
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**CONSOLE_INFO, **(run_config or {})},
        tags=tags,
        raise_on_error=False,
    )
    if raise_on_failure and not result.success:
        raise RunFailed(f"{job_name} run {result.run_id}: {failure_summary(result)}")
    return result


def materialization_metadata(result: ExecuteInProcessResult, asset_name: str) -> dict[str, Any]:
    """The metadata of ``asset_name``'s materialization in a finished run, as plain values
    ({} when the run did not materialize it)."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset_name:
            return {key: value.value for key, value in materialization.metadata.items()}
    return {}


def ingest_batch_through_dagster(
    source: Path, batch: str, layout: StateLayout, instance: DagsterInstance | None = None
) -> BatchManifest:
    """Materialize ``raw_images`` for ``batch`` from ``source`` and return its manifest."""
    if not source.is_dir():
        raise FileNotFoundError(f"batch folder {source} does not exist or is not a folder")
    run_job(
        "ingest_job",
        layout,
        partition_key=batch,
        run_config={"ops": {"raw_images": {"config": {"source_dir": str(source)}}}},
        instance=instance,
    )
    return BatchManifest.load(layout.manifest_path(batch))
