"""A sensor ticked by carsdepo is recorded as the daemon records it: the tick, under the sensor
identity `dagster dev` shows, with the runs it requested as runs of the workspace's jobs
(tagged with the sensor), and the cursor where the daemon will go on from."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from dagster._core.scheduler.instigation import TickStatus

from carsdepo_assets.cli.runner import local_instance
from carsdepo_assets.cli.sensor_ticks import sensor_state, tick_sensor
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.images.samples import jpeg


def land(layout: StateLayout, batch: str, photos: int) -> None:
    folder = layout.landing / batch
    folder.mkdir(parents=True)
    old = time.time() - 3600  # past the landing zone's quiet period
    for index in range(photos):
        path = folder / f"car-{index}.jpg"
        path.write_bytes(jpeg(index))
        os.utime(path, (old, old))
    os.utime(folder, (old, old))


def test_a_landing_zone_tick_is_recorded_with_the_ingest_run_it_launched(tmp_path: Path):
    layout = StateLayout(tmp_path / "home").ensure()
    land(layout, "b1", 2)

    outcome = tick_sensor("landing_zone_sensor", layout)
    again = tick_sensor("landing_zone_sensor", layout)

    ((job_name, result),) = outcome.runs
    assert job_name == "ingest_job" and result.success
    assert again.runs == [] and "no new complete batch folder" in again.skip_reason
    with local_instance(layout) as instance:
        run = instance.get_run_by_id(result.run_id)
        origin_id, selector_id, state = sensor_state(instance, "landing_zone_sensor")
        ticks = instance.get_ticks(origin_id, selector_id)
    assert run.tags["dagster/sensor_name"] == "landing_zone_sensor"
    assert run.tags["carsdepo/started_by"] == "sensor"
    assert run.tags["dagster/partition"] == "b1"
    assert [(tick.status, list(tick.run_ids)) for tick in ticks] == [
        (TickStatus.SKIPPED, []), (TickStatus.SUCCESS, [result.run_id])]
    assert state is not None and state.instigator_data.last_tick_timestamp is not None


def test_tick_sensor_command_says_what_the_tick_started_and_then_why_it_skipped(tmp_path: Path):
    layout = StateLayout(tmp_path / "home").ensure()
    land(layout, "b1", 1)
    env = {**os.environ, "CARSDEPO_HOME": str(layout.root),
           "DAGSTER_HOME": str(layout.dagster_home)}
    command = [sys.executable, "-m", "carsdepo_assets.cli", "tick-sensor", "landing_zone_sensor"]

    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert first.returncode == 0, first.stderr
    assert re.search(r"landing_zone_sensor tick 1: ingest_job run \S+ succeeded", first.stderr)
    assert second.returncode == 0, second.stderr
    assert "landing_zone_sensor tick 2: skipped, no new complete batch folder" in second.stderr
