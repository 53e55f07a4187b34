"""`carsdepo demo` reports its own outcome, run for real (a tiny demo: real Label Studio, real
Dagster runs, a real MLflow store, a few training iterations): a gate that cannot pass stops
the loop with one paragraph and a non-zero exit and no stack trace on the console; a loop that
reaches its end prints a summary and exits 0. Dagster's log goes to the file it names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carsdepo_assets.labeling import server
from carsdepo_assets_tests.fixtures.label_studio import free_port, migrated_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.label_studio]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--images", "24", "--labelled-images", "40", "--test-images", "24", "--iterations",
        "2", "--backend", "torchvision"]
LOG_LINE = re.compile(r"the full log \(Dagster's\) goes to (?P<path>\S+\.log)")


def run_demo(home: Path, pytestconfig: pytest.Config, *extra: str) -> subprocess.CompletedProcess:
    """The demo as a user runs it, in ``home``; Label Studio starts from an already migrated
    database (migrations take minutes) and is stopped afterwards."""
    template = migrated_data_dir(pytestconfig.cache.mkdir("label-studio"),
                                 server.label_studio_bin())
    shutil.copytree(template, home / "label-studio" / server.DATA_FOLDER)
    env = {**os.environ, "CARSDEPO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_URI": ""}
    cli = [sys.executable, "-m", "carsdepo_assets.cli"]
    try:
        return subprocess.run([*cli, "demo", *TINY, *extra], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([*cli, "labelstudio", "stop"], cwd=PROJECT_ROOT, env=env,
                       capture_output=True, timeout=120)


def log_of(console: str) -> str:
    match = LOG_LINE.search(console)
    assert match, f"the demo did not name its log file:\n{console}"
    return Path(match["path"]).read_text()


def test_gate_that_cannot_pass_stops_with_one_paragraph_and_a_nonzero_exit(
    tmp_path: Path, pytestconfig: pytest.Config
):
    demo = run_demo(tmp_path / "home", pytestconfig)
    console = demo.stdout + demo.stderr

    assert demo.returncode == 1, console
    assert "The demo stopped before the end of the loop." in console
    assert "The quality gate held the new model back" in console
    assert "AP50_lower_bound" in console and "is below the minimum 0.5000" in console
    assert "What to do: Train longer (`carsdepo demo --iterations 4`)" in console
    assert "Traceback" not in console and "dagster._core" not in console
    assert "Demo finished" not in console and "photos answered" not in console
    log = log_of(console)
    assert "training_job" in log and "quality_gate" in log  # Dagster's own log is in the file


def test_loop_that_reaches_its_end_prints_answers_and_a_summary_and_exits_zero(
    tmp_path: Path, pytestconfig: pytest.Config
):
    demo = run_demo(tmp_path / "home", pytestconfig, "--min-ap50", "0",
                    "--min-none-accuracy", "0")
    console = demo.stdout + demo.stderr

    assert demo.returncode == 0, console
    assert "test split (24 photos): AP50" in console and "(lower bound " in console
    assert "champion: carsdepo-damage-detector v1" in console
    assert re.search(r"24 photos answered: \d+ damaged, \d+ \"None\"", console)
    assert "Demo finished in" in console and "champions carsdepo-damage-detector v1" in console
    # the sensors started the loop's runs, and the annotators reviewed the champion's boxes
    assert re.search(r"sensor tick \d+: ingest_job run \w+ for demo-labelled-s7", console)
    assert re.search(r"sensor tick \d+: dataset_job run", console)
    assert re.search(r"sensor tick \d+: training_job run \w+ \(new_labels \d+\)", console)
    assert re.search(r"\d+ pre-annotations of carsdepo-damage-detector v1", console)
    assert re.search(r"pre-annotations reviewed on \d+ photos: \d+ boxes accepted", console)
    assert "torch thread" in console
    assert "Traceback" not in console and " - dagster - " not in console
    assert "iteration 2/2" in log_of(console)  # training progress went to the log
    assert_the_loop_is_recorded_where_the_ui_reads_it(tmp_path / "home")


def assert_the_loop_is_recorded_where_the_ui_reads_it(home: Path) -> None:
    """The job pages list the runs (job name + the code location's repository label) and the
    sensor pages the ticks that requested them."""
    from dagster import RunsFilter
    from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

    from carsdepo_assets.cli.runner import local_instance
    from carsdepo_assets.cli.sensor_ticks import sensor_state
    from carsdepo_assets.state import StateLayout

    with local_instance(StateLayout(home)) as instance:
        trainings = instance.get_runs(RunsFilter(job_name="training_job", tags={
            REPOSITORY_LABEL_TAG: "__repository__@carsdepo"}))
        launched = {}
        for sensor in ("landing_zone_sensor", "annotation_sensor", "dataset_sensor",
                       "drift_sensor"):
            origin_id, selector_id, _ = sensor_state(instance, sensor)
            launched[sensor] = [run_id for tick in instance.get_ticks(origin_id, selector_id)
                                for run_id in tick.run_ids]
        started_by = {run.tags.get("carsdepo/started_by") for run in instance.get_runs()}
    assert {run.tags.get("dagster/sensor_name") for run in trainings} <= {
        "dataset_sensor", "drift_sensor"} and trainings
    assert all(launched.values()), launched
    assert started_by == {"demo", "sensor"}
