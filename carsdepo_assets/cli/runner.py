"""The one way commands run carsdepo's jobs: the code location's definitions built on the state
folder the command was given, executed in that folder's Dagster instance (``<state>/dagster``,
configured by the repo's dagster.yaml), so that CLI runs show in the Dagster UI (``make dev``)
exactly like runs launched there. Nothing here reads or writes the process environment.

Several ``carsdepo`` processes may share one state folder. The instance is opened under a file
lock (``StateLayout.instance_lock``): the first opening creates its SQLite storage, and a second
process waits instead of racing it; partitions are registered under the same lock. A run of a
batch holds that batch's lock (``StateLayout.batch_lock``), so a second run of the same batch
waits for the first, and a command reads its batch's manifest before letting go: it reports its
own run. Opening the instance also marks failed the runs whose ``carsdepo`` process was killed
mid-run, and removes the temporary files such a process left.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunsFilter,
    multi_or_in_process_executor,
)
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.remote_origin import RemoteRepositoryOrigin
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._utils.error import SerializableErrorInfo
from filelock import Timeout

from carsdepo_assets.cli.console import say
from carsdepo_assets.fileio import (
    process_started,
    remove_orphaned_temporaries,
    same_process_running,
)
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.state import PROJECT_ROOT, StateLayout, validate_batch_name

INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"
WORKSPACE_FILE = PROJECT_ROOT / "workspace.yaml"

# Dagster's console logger defaults to DEBUG (every step event); people at a terminal want INFO.
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# Every step in this process, one after another, as execute_in_process runs them.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
# What started a run: "cli" (a carsdepo command), "demo", "sensor" (with dagster/sensor_name).
STARTED_BY_TAG = "carsdepo/started_by"
# Which process runs a run: a run whose process is gone was killed (see local_instance). The
# process is its pid and its start time: a pid alone may since belong to another program.
PID_TAG = "carsdepo/pid"
PID_STARTED_TAG = "carsdepo/pid_started"
HOST_TAG = "carsdepo/host"
IN_FLIGHT = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
_QUALIFIED = re.compile(r"^(?:\w+\.)+(\w+): ")  # "pkg.module.SomeError: " -> "SomeError: "
_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}


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
    """The state folder's Dagster instance, opened from its folder under the instance lock (see
    the module docstring)."""
    with layout.instance_lock():
        instance = DagsterInstance.from_config(prepare_dagster_home(layout))
        fail_abandoned_runs(instance)  # the first opening creates the SQLite storage
        remove_orphaned_temporaries([
            layout.images, layout.quarantine, layout.manifests, layout.annotations,
            layout.datasets, layout.reports, layout.profiles, layout.predictions,
        ])
    return instance


@cache
def definitions_for(layout: StateLayout) -> Definitions:
    """The code location with every resource on ``layout``'s folder."""
    from carsdepo_assets.definitions import build_definitions
    from carsdepo_assets.resources.state import CarsdepoHome

    return build_definitions(CarsdepoHome(path=str(layout.root)))


def fail_abandoned_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed the in-flight runs of this host whose ``carsdepo`` process is gone (killed
    mid-run: nothing else would ever end them), its pid free or reused by another process
    (told apart by the process start time recorded with the pid); returns their ids."""
    host, failed = socket.gethostname(), []
    for run in instance.get_runs(RunsFilter(statuses=IN_FLIGHT, tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG, "0"))
        started = run.tags.get(PID_STARTED_TAG)
        if pid and not same_process_running(pid, float(started) if started else None):
            instance.report_run_failed(
                run, f"process {pid} running {run.job_name} ended without finishing the run "
                "(killed); marked failed when the instance was next opened")
            failed.append(run.run_id)
    return failed


def add_batch_partition(instance: DagsterInstance, batch: str, layout: StateLayout) -> None:
    """Register ``batch`` (validated first: nothing is registered for a refused name)."""
    validate_batch_name(batch)
    with layout.instance_lock():
        if not instance.has_dynamic_partition(BATCHES_PARTITIONS_NAME, batch):
            instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [batch])


@contextmanager
def batch_run(layout: StateLayout, batch: str) -> Iterator[None]:
    """Hold ``batch``'s lock, saying so when another run of it makes this one wait."""
    lock = layout.batch_lock(validate_batch_name(batch))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"batch {batch}: another run of this batch is in progress; waiting for it to end")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@cache
def workspace_repository() -> RemoteRepositoryOrigin:
    """The repository of workspace.yaml's code location, as ``dagster dev`` loads it. A run
    created with its job origin belongs to that job in the UI (job pages, the timeline, the
    asset pages' "launched by"), whichever process executed it."""
    (location,) = WorkspaceFileTarget(paths=[str(WORKSPACE_FILE)]).create_origins()
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME)


def step_failures(result: ExecutionResult) -> dict[str, str]:
    """The error of each failed step of a finished run, by step key, with its causes: Dagster's
    own message only says *that* the op failed (``Error occurred while executing op ...``)."""
    return {event.step_key: error_with_causes(event.step_failure_data.error)
            for event in result.all_events
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error}


def error_with_causes(error: SerializableErrorInfo) -> str:
    """The error's message followed by each cause's, class names without their modules;
    Dagster's wrapper (``Error occurred while executing op ...``) gives way to its cause."""
    messages: list[str] = []
    current: SerializableErrorInfo | None = error
    while current is not None:
        following = current.cause or current.context
        message = _QUALIFIED.sub(r"\1: ", current.message.strip())
        if message and message not in messages and not (
            following is not None and current.cls_name in _WRAPPERS
        ):
            messages.append(message)
        current = following
    return " <- ".join(messages)


def failure_summary(result: ExecutionResult) -> str:
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
    started_by: str = "cli",
    raise_on_failure: bool = True,
    defs: Definitions | None = None,
) -> ExecutionResult:
    """Execute a job of ``defs`` (default: the code location on ``layout``) in this process,
    as a run of the workspace's job of that name in ``instance`` (default: ``layout``'s),
    tagged with what started it (``started_by``: cli, demo or sensor).

    A failed run raises RunFailed naming the failed steps, unless ``raise_on_failure`` is
    False (for callers to whom a failure is an outcome, e.g. a blocking quality gate)."""
    defs = defs or definitions_for(layout)
    if partition_key is not None:
        validate_batch_name(partition_key)  # before anything is written or registered
    layout.ensure()
    if instance is None:
        instance = local_instance(layout)
    # A command's run executes here whatever the code location's executor: under
    # CARSDEPO_EXECUTOR=celery only the daemon's runs go to the workers (docs/guides/cluster.md).
    job = defs.resolve_job_def(job_name).with_executor_def(multi_or_in_process_executor)
    run_tags = {**job.run_tags, **(tags or {}), STARTED_BY_TAG: started_by,
                PID_TAG: str(os.getpid()), PID_STARTED_TAG: repr(process_started()),
                HOST_TAG: socket.gethostname()}
    if partition_key is not None:
        run_tags[PARTITION_NAME_TAG] = partition_key
    with batch_run(layout, partition_key) if partition_key is not None else nullcontext():
        if partition_key is not None:
            add_batch_partition(instance, partition_key, layout)
        run = instance.create_run_for_job(
            job_def=job,
            run_config={**CONSOLE_INFO, **IN_PROCESS, **(run_config or {})},
            tags=run_tags,
            remote_job_origin=workspace_repository().get_job_origin(job_name),
        )
        result = execute_run(InMemoryJob(job), run, instance)
    if raise_on_failure and not result.success:
        raise RunFailed(f"{job_name} run {result.run_id}: {failure_summary(result)}")
    return result


def stored_asset_value(layout: StateLayout, asset_name: str) -> Any:
    """The latest stored value of ``asset_name`` in ``layout``, read through its IO manager."""
    return definitions_for(layout).load_asset_value(asset_name, instance=local_instance(layout))


def materialization_metadata(result: ExecutionResult, asset_name: str) -> dict[str, Any]:
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
    """Materialize ``raw_images`` for ``batch`` from ``source`` and return the manifest this run
    wrote (read before the batch's lock is released, so no other run can have replaced it)."""
    validate_batch_name(batch)
    if not source.is_dir():
        raise FileNotFoundError(f"batch folder {source} does not exist or is not a folder")
    with batch_run(layout, batch):
        run_job(
            "ingest_job",
            layout,
            partition_key=batch,
            run_config={"ops": {"raw_images": {"config": {"source_dir": str(source)}}}},
            instance=instance,
        )
        return BatchManifest.load(layout.manifest_path(batch))
