"""One tick of a sensor, evaluated and recorded as the Dagster daemon records it.

``carsdepo demo`` (and ``carsdepo tick-sensor``) let the sensors start the loop's runs instead of
starting them itself, without waiting for the daemon's polling intervals: the sensor of the code
location is evaluated with Dagster's own ``evaluate_tick`` on its stored cursor; the tick, its
skip reason or run requests, and the new cursor are stored in the instance under the same
sensor identity as ``dagster dev`` uses, so the UI's sensor pages show these ticks and the daemon
goes on from the cursor the demo left. Each requested run is created as a run of the workspace's
job, tagged as the daemon tags it (``dagster/sensor_name``, ``dagster/run_key``), and executed in
this process. A sensor switched off in the UI is not evaluated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dagster import (
    DagsterInstance,
    RunRequest,
    RunsFilter,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
    TickData,
    TickStatus,
)
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._utils.error import serializable_error_info_from_exc_info

from carsdepo_assets.cli.runner import (
    definitions_for,
    local_instance,
    run_job,
    workspace_repository,
)
from carsdepo_assets.state import StateLayout


@dataclass
class TickOutcome:
    """What one tick did: its id, why it skipped, and the runs it started (job, result)."""

    sensor: str
    tick_id: int | None
    skip_reason: str | None = None
    runs: list[tuple[str, ExecutionResult]] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.tick_id is None


def sensor_state(instance: DagsterInstance, name: str) -> tuple[str, str, InstigatorState | None]:
    """(origin id, selector id, stored state) of the code location's sensor ``name``."""
    repository = workspace_repository()
    origin = repository.get_instigator_origin(name)
    selector = InstigatorSelector(location_name=repository.code_location_origin.location_name,
                                  repository_name=repository.repository_name, name=name)
    origin_id, selector_id = origin.get_id(), selector.get_id()
    return origin_id, selector_id, instance.get_instigator_state(origin_id, selector_id)


def tick_sensor(
    name: str,
    layout: StateLayout,
    *,
    run_config: dict[str, dict] | None = None,
    instance: DagsterInstance | None = None,
) -> TickOutcome:
    """Evaluate sensor ``name`` once, record the tick, and run what it requested (see module).

    ``run_config`` maps a job name to run config merged under each request's own, as a
    deployment sets run config defaults (the demo's training iterations, its capped sweep)."""
    instance = instance or local_instance(layout)
    defs = definitions_for(layout)
    sensor_def = defs.resolve_sensor_def(name)
    origin_id, selector_id, state = sensor_state(instance, name)
    if state is not None and state.status == InstigatorStatus.STOPPED:
        return TickOutcome(name, None, "stopped in the Dagster UI")
    started = time.time()
    cursor = state.instigator_data.cursor if state is not None else None
    tick = instance.create_tick(TickData(
        instigator_origin_id=origin_id, instigator_name=name,
        instigator_type=InstigatorType.SENSOR, status=TickStatus.STARTED, timestamp=started,
        selector_id=selector_id,
    ))
    try:
        with build_sensor_context(instance=instance, cursor=cursor, sensor_name=name,
                                  repository_def=defs.get_repository_def(),
                                  resources={key: defs.resources[key] for key in
                                             sensor_def.required_resource_keys}) as context:
            requests, skip_reason, partitions, cursor = _evaluate(sensor_def, context)
    except Exception as error:
        info = serializable_error_info_from_exc_info((type(error), error, error.__traceback__))
        instance.update_tick(tick.with_status(TickStatus.FAILURE, error=info))
        raise
    for request in partitions:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    requests = [request for request in requests
                if not _already_launched(instance, name, request.run_key)]
    planned = []
    for request in requests:
        job_name = request.job_name or sensor_def.job_name
        tags = {**request.tags, SENSOR_NAME_TAG: name,
                **({RUN_KEY_TAG: request.run_key} if request.run_key else {})}
        config = {**(run_config or {}).get(job_name, {}), **(request.run_config or {})}
        planned.append((job_name, request.partition_key, config, tags))
    outcome = TickOutcome(name, tick.tick_id,
                          None if requests else (skip_reason or "no run requested"))
    for job_name, partition_key, config, tags in planned:
        result = run_job(job_name, layout, partition_key=partition_key, run_config=config,
                         tags=tags, started_by="sensor", raise_on_failure=False,
                         instance=instance)
        tick = tick.with_run_info(result.run_id, tags.get(RUN_KEY_TAG))
        outcome.runs.append((job_name, result))
    finished = tick.with_cursor(cursor)
    finished = (finished.with_status(TickStatus.SUCCESS) if outcome.runs
                else finished.with_status(TickStatus.SKIPPED).with_reason(outcome.skip_reason))
    instance.update_tick(finished)
    _store_state(instance, sensor_def, state, cursor, started)
    return outcome


def _evaluate(sensor_def, context):
    """The sensor function's answer as (run requests, skip reason, dynamic partition requests,
    cursor), read from each form a sensor may return (partitions are added before runs start,
    as the daemon does)."""
    answer = sensor_def(context)
    single = answer is None or isinstance(answer, SensorResult | RunRequest | SkipReason)
    answers = [answer] if single else list(answer)
    requests, skip_reasons, partitions, cursor = [], [], [], context.cursor
    for item in answers:
        if isinstance(item, SensorResult):
            requests += item.run_requests or []
            partitions += item.dynamic_partitions_requests or []
            if item.skip_reason is not None:
                skip_reasons.append(item.skip_reason.skip_message)
            cursor = item.cursor if item.cursor is not None else cursor
        elif isinstance(item, RunRequest):
            requests.append(item)
        elif isinstance(item, SkipReason):
            skip_reasons.append(item.skip_message)
    return requests, "; ".join(filter(None, skip_reasons)) or None, partitions, cursor


def _already_launched(instance: DagsterInstance, sensor: str, run_key: str | None) -> bool:
    """A run key is acted on once per sensor, as the daemon does."""
    return bool(run_key) and bool(instance.get_run_ids(
        RunsFilter(tags={SENSOR_NAME_TAG: sensor, RUN_KEY_TAG: run_key}), limit=1))


def _store_state(instance: DagsterInstance, sensor_def, state: InstigatorState | None,
                 cursor: str | None, started: float) -> None:
    """The sensor's cursor and last tick, where the daemon reads them."""
    data = SensorInstigatorData(last_tick_timestamp=time.time(), cursor=cursor,
                                min_interval=sensor_def.minimum_interval_seconds,
                                last_tick_start_timestamp=started,
                                sensor_type=sensor_def.sensor_type,
                                last_tick_success_timestamp=time.time())
    if state is None:
        origin = workspace_repository().get_instigator_origin(sensor_def.name)
        instance.add_instigator_state(InstigatorState(
            origin, InstigatorType.SENSOR, InstigatorStatus.DECLARED_IN_CODE, data))
    else:
        instance.update_instigator_state(state.with_data(data))
