"""``carsdepo tick-sensor NAME``: one tick of a sensor now, recorded as the daemon records it.

For a machine without the Dagster daemon (``make dev`` runs one), or to see at once what a
sensor would do: the tick, its skip reason or the runs it started show in the UI's sensor page.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from carsdepo_assets.cli.console import say
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand

SENSORS = ("landing_zone_sensor", "annotation_sensor", "dataset_sensor", "drift_sensor",
           "freshness_sensor")


def cmd_tick_sensor(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.cli.runner import failure_summary
    from carsdepo_assets.cli.sensor_ticks import tick_sensor

    outcome = tick_sensor(args.sensor, layout.ensure())
    if outcome.stopped:
        say(f"{args.sensor} is switched off in the Dagster UI: nothing evaluated")
        return 0
    if not outcome.runs:
        say(f"{args.sensor} tick {outcome.tick_id}: skipped, {outcome.skip_reason}")
    failed = 0
    for job_name, result in outcome.runs:
        state = "succeeded" if result.success else f"failed: {failure_summary(result)}"
        say(f"{args.sensor} tick {outcome.tick_id}: {job_name} run {result.run_id} {state}")
        failed += not result.success
    return 1 if failed else 0


def register(command: AddCommand) -> None:
    tick = command("tick-sensor", cmd_tick_sensor,
                   "Evaluate a sensor once now and run what it requests (the tick is recorded "
                   "as the Dagster daemon records it; exit 1 when a run failed).")
    tick.add_argument("sensor", choices=SENSORS, help="the sensor to tick")
