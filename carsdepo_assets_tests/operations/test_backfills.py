"""Backfills from the Dagster CLI, run exactly as the README documents them, as subprocesses
on a temporary state directory (the repo's dagster.yaml: a queued run coordinator)."""

from __future__ import annotations

import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.state import PROJECT_ROOT
from carsdepo_assets_tests.fixtures.processes import stop_process_group
from carsdepo_assets_tests.operations.conftest import land_batch, run_cli

pytestmark = pytest.mark.slow
DAEMON_WAIT_S = 480  # a ceiling for the wait, not a speed expectation
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def selection_parser_conflict() -> str | None:
    """Why Dagster's asset-selection parser cannot load here, if it cannot: omegaconf (pulled
    in by detectron2) pins antlr4-python3-runtime 4.9, whose runtime cannot read the parser
    Dagster generated with ANTLR 4.13, so every `--select` fails at import."""
    runtime = version("antlr4-python3-runtime")
    if tuple(int(part) for part in runtime.split(".")[:2]) < (4, 13):
        return (f"antlr4-python3-runtime {runtime} is installed (omegaconf/detectron2 pin "
                "4.9): Dagster's asset-selection parser needs 4.13")
    return None


RECOMPUTE_ONE_BATCH = {
    "asset-materialize": ["dagster", "asset", "materialize", "-m", "carsdepo_assets.definitions",
                          "--select", "raw_images", "--partition", "batch-a"],
    "job-execute": ["dagster", "job", "execute", "-m", "carsdepo_assets.definitions",
                    "-j", "ingest_job", "--tags", '{"dagster/partition": "batch-a"}'],
}


@pytest.mark.parametrize("route", sorted(RECOMPUTE_ONE_BATCH))
def test_cli_recomputes_one_batch_partition(route, carsdepo_home, cli_env):
    if route == "asset-materialize" and selection_parser_conflict():
        pytest.skip(selection_parser_conflict())
    land_batch(carsdepo_home, "batch-a", count=3)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, ["batch-a"])

    run_cli(RECOMPUTE_ONE_BATCH[route], cli_env)

    assert load_manifest(carsdepo_home, "batch-a").counts["stored"] == 3
    with DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(AssetKey("raw_images"))
        assert event.asset_materialization.partition == "batch-a"


def test_job_backfill_queues_one_run_per_batch_that_the_daemon_executes(carsdepo_home, cli_env):
    """`dagster job backfill` only submits: with the queued run coordinator the runs wait in
    the queue until `dagster-daemon` (run by `make dev` / `dagster dev`) launches them."""
    batches = ["batch-a", "batch-b"]
    for index, batch in enumerate(batches):
        land_batch(carsdepo_home, batch, count=2, first_seed=10 * index)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, batches)

    output = run_cli(["dagster", "job", "backfill", "-w", "workspace.yaml", "-j", "ingest_job",
                      "--partitions", ",".join(batches), "--noprompt"], cli_env)

    assert "Launched backfill job" in output
    with DagsterInstance.get() as instance:
        [backfill] = instance.get_backfills()
        assert sorted(backfill.partition_names) == batches
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert sorted(run.tags["dagster/partition"] for run in runs) == batches
        assert {run.status for run in runs} == {DagsterRunStatus.QUEUED}

    statuses = wait_for_daemon(cli_env, backfill.backfill_id, len(batches))

    assert statuses == [DagsterRunStatus.SUCCESS] * len(batches)
    for batch in batches:
        assert load_manifest(carsdepo_home, batch).counts["stored"] == 2


def wait_for_daemon(env: dict[str, str], backfill_id: str, runs: int) -> list[DagsterRunStatus]:
    """Run `dagster-daemon` until the backfill's runs have finished; their final statuses."""
    log = Path(env["DAGSTER_HOME"]) / "daemon.log"
    with log.open("w") as output:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + DAEMON_WAIT_S
        while True:
            with DagsterInstance.get() as instance:
                found = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            statuses = [run.status for run in found]
            if len(statuses) == runs and set(statuses) <= FINISHED:
                return statuses
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"runs {statuses} unfinished; daemon log:\n{log.read_text()[-4000:]}")
            time.sleep(2)
    finally:
        stop_process_group(daemon)
