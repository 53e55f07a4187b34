"""`carsdepo demo` reports its own outcome, run for real (a tiny demo: real Label Studio, real
Dagster runs, a real MLflow store, a few training iterations): a gate that cannot pass stops
the loop with one paragraph and a non-zero exit and no stack trace on the console; a loop that
reaches its end prints a summary and exits 0. Dagster's log goes to the file it names. After it,
Label Studio and MLflow show the loop in a real browser: the champion's pre-annotations with their
model version, and the registered version with its test figures and gate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from carsdepo_assets.labeling import server
from carsdepo_assets_tests.fixtures.browser import RENDER_WAIT_S, save_screenshot
from carsdepo_assets_tests.fixtures.label_studio import free_port, migrated_data_dir
from carsdepo_assets_tests.fixtures.processes import stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.label_studio]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--images", "24", "--labelled-images", "40", "--test-images", "24", "--iterations",
        "2", "--backend", "torchvision"]
LOG_LINE = re.compile(r"the full log \(Dagster's\) goes to (?P<path>\S+\.log)")


@dataclass(frozen=True)
class FinishedDemo:
    home: Path
    console: str
    returncode: int
    env: dict[str, str]


@dataclass(frozen=True)
class RunningDemo:
    """A demo started in the background: its console goes to files (a pipe nobody reads
    would fill and stall it)."""
    home: Path
    process: subprocess.Popen
    env: dict[str, str]

    def finish(self, timeout_s: float = 900) -> FinishedDemo:
        self.process.wait(timeout=timeout_s)
        console = (self.home / "demo.out").read_text() + (self.home / "demo.err").read_text()
        return FinishedDemo(self.home, console, self.process.returncode, self.env)


@contextmanager
def demo_started(home: Path, pytestconfig: pytest.Config, *extra: str) -> Iterator[RunningDemo]:
    """The demo as a user runs it, in ``home``, started in the background; Label Studio starts
    from an already migrated database (migrations take minutes). When the block ends, the demo
    is stopped if it still runs, and its Label Studio with it."""
    template = migrated_data_dir(pytestconfig.cache.mkdir("label-studio"),
                                 server.label_studio_bin())
    shutil.copytree(template, home / "label-studio" / server.DATA_FOLDER)
    env = {**os.environ, "CARSDEPO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_URI": ""}
    cli = [sys.executable, "-m", "carsdepo_assets.cli"]
    with (home / "demo.out").open("w") as out, (home / "demo.err").open("w") as err:
        process = subprocess.Popen([*cli, "demo", *TINY, *extra], cwd=PROJECT_ROOT, env=env,
                                   stdout=out, stderr=err, text=True, start_new_session=True)
    try:
        yield RunningDemo(home, process, env)
    finally:
        stop_process_group(process, grace_s=20)
        subprocess.run([*cli, "labelstudio", "stop"], cwd=PROJECT_ROOT, env=env,
                       capture_output=True, timeout=120)


@dataclass(frozen=True)
class TwoDemos:
    gate_held: FinishedDemo  # the default gate, which two training iterations cannot pass
    finished: FinishedDemo  # a gate that lets every model through; its Label Studio still runs


@pytest.fixture(scope="module")
def two_demos(tmp_path_factory, pytestconfig: pytest.Config) -> Iterator[TwoDemos]:
    """Two tiny demos side by side (on two cores the pair takes little longer than one)."""
    root = tmp_path_factory.mktemp("demo")
    with demo_started(root / "held", pytestconfig) as held, \
            demo_started(root / "home", pytestconfig, "--min-ap50", "0",
                         "--min-none-accuracy", "0") as finished:
        yield TwoDemos(held.finish(), finished.finish())


@pytest.fixture(scope="module")
def finished_demo(two_demos: TwoDemos) -> FinishedDemo:
    return two_demos.finished


def log_of(console: str) -> str:
    match = LOG_LINE.search(console)
    assert match, f"the demo did not name its log file:\n{console}"
    return Path(match["path"]).read_text()


def test_gate_that_cannot_pass_stops_with_one_paragraph_and_a_nonzero_exit(
    two_demos: TwoDemos,
):
    demo = two_demos.gate_held
    console = demo.console

    assert demo.returncode == 1, console
    assert "The demo stopped before the end of the loop." in console
    assert "The quality gate held the new model back" in console
    assert "AP50_lower_bound" in console and "is below the minimum 0.5000" in console
    assert ("What to do: Train longer (`carsdepo demo --iterations 4 --train-seconds 380`)"
            in console)
    assert "Traceback" not in console and "dagster._core" not in console
    assert "Demo finished" not in console and "photos answered" not in console
    log = log_of(console)
    assert "training_job" in log and "quality_gate" in log  # Dagster's own log is in the file


def test_loop_that_reaches_its_end_prints_answers_and_a_summary_and_exits_zero(
    finished_demo: FinishedDemo,
):
    console = finished_demo.console

    assert finished_demo.returncode == 0, console
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
    assert_the_loop_is_recorded_where_the_ui_reads_it(finished_demo.home)


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


@pytest.mark.browser
def test_label_studio_and_mlflow_show_the_pre_annotations_and_the_model_history(
    finished_demo: FinishedDemo, chromium
):
    """Label Studio: the project's footer counts the champion's predictions and a task shows
    the prediction named by its model version; MLflow: the champion's version page carries the
    test figures and the gate. Screenshots of each go to test-artifacts/."""
    assert finished_demo.returncode == 0, finished_demo.console
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = finished_demo.env["LABEL_STUDIO_URL"]
    project, predicted_task, model_version = project_with_predictions(url)
    wait = WebDriverWait(chromium, RENDER_WAIT_S, poll_frequency=2)
    log_in_to_label_studio(chromium, url)

    chromium.get(f"{url}/projects/{project['id']}/data")
    try:
        wait.until(lambda driver: f"Predictions: {project['total_predictions_number']}"
                   in driver.find_element(By.TAG_NAME, "body").text)
    finally:
        save_screenshot(chromium, "ls-data.png")
    chromium.get(f"{url}/projects/{project['id']}/data?task={predicted_task}")
    try:  # Label Studio shortens a long name to its head and tail: "carsdepo...tor v1"
        wait.until(lambda driver: any(
            name.text.startswith(model_version[:8]) and name.text.endswith(model_version[-4:])
            for name in driver.find_elements(By.CSS_SELECTOR, ".lsf-annotation-button__name")))
    finally:
        save_screenshot(chromium, "ls-task-prediction.png")

    name, version = champion_of(finished_demo.console)
    with mlflow_ui(finished_demo) as mlflow_url:
        chromium.get(f"{mlflow_url}/#/models/{name}/versions/{version}")
        try:
            wait.until(lambda driver: "carsdepo.test_AP50_lower_bound"
                       in driver.find_element(By.TAG_NAME, "body").text)
        finally:
            save_screenshot(chromium, "mlflow-version.png")
        page = chromium.find_element(By.TAG_NAME, "body").text
    assert "Test split: AP50" in page and "Quality gate: passed." in page
    assert "@ champion" in page


def project_with_predictions(url: str) -> tuple[dict, int, str]:
    """The demo's labelling project, one of its tasks with a pre-annotation, and its model
    version, read from Label Studio's API."""
    headers = {"Authorization": f"Token {server.DEFAULT_TOKEN}"}
    listing = requests.get(f"{url}/api/projects", headers=headers, timeout=60).json()
    projects = [project for project in listing.get("results", listing)
                if project.get("total_predictions_number")]
    assert len(projects) == 1, listing  # the verified test project holds no predictions
    project = projects[0]
    tasks = requests.get(f"{url}/api/tasks", headers=headers, timeout=60, params={
        "project": project["id"], "page_size": 1000, "fields": "all"}).json()["tasks"]
    task = next(task for task in tasks if task.get("predictions"))
    return project, task["id"], task["predictions"][0]["model_version"]


def log_in_to_label_studio(driver, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/user/login/")
    WebDriverWait(driver, RENDER_WAIT_S, poll_frequency=1).until(
        lambda d: d.find_elements(By.NAME, "email"))
    driver.find_element(By.NAME, "email").send_keys(server.DEFAULT_USERNAME)
    driver.find_element(By.NAME, "password").send_keys(server.DEFAULT_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, RENDER_WAIT_S, poll_frequency=1).until(
        lambda d: "/user/login" not in d.current_url)


CHAMPION = re.compile(r"champion: (?P<name>\S+) v(?P<version>\d+)")


def champion_of(console: str) -> tuple[str, str]:
    """The last champion the demo printed: registered model name and version."""
    *_, last = CHAMPION.finditer(console)
    return last["name"], last["version"]


@contextmanager
def mlflow_ui(demo: FinishedDemo) -> Iterator[str]:
    """`carsdepo mlflow-ui` over the demo's store on a free port, while the block runs."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "carsdepo_assets.cli", "mlflow-ui", "--port", str(port)],
        cwd=PROJECT_ROOT, env=demo.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + RENDER_WAIT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{url}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        yield url
    finally:
        stop_process_group(process, grace_s=20)
