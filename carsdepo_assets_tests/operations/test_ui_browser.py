"""A real browser on the real UI: `dagster dev` on a free port, headless Chromium on its asset
graph, every carsdepo asset group on screen, and a screenshot kept in test-artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from carsdepo_assets.state import PROJECT_ROOT
from carsdepo_assets_tests.fixtures.browser import RENDER_WAIT_S, save_screenshot
from carsdepo_assets_tests.fixtures.label_studio import free_port
from carsdepo_assets_tests.fixtures.processes import stop_process_group

pytestmark = [pytest.mark.browser, pytest.mark.slow]
START_WAIT_S = 300  # a ceiling for the wait, not a speed expectation


@pytest.fixture
def dagster_dev(carsdepo_home) -> Iterator[str]:
    """`dagster dev` on the repo's workspace and a temporary DAGSTER_HOME; its URL once the
    carsdepo code location has loaded."""
    with dagster_dev_on(carsdepo_home) as url:
        yield url


@contextmanager
def dagster_dev_on(carsdepo_home) -> Iterator[str]:
    """`dagster dev` over ``carsdepo_home``'s instance, for as long as the block runs."""
    from carsdepo_assets.cli.runner import prepare_dagster_home

    prepare_dagster_home(carsdepo_home)
    port = free_port()
    log_path = carsdepo_home.root / "dagster-dev.log"
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
               "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=dict(os.environ),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_location(url, process, log_path)
        yield url
    finally:
        stop_process_group(process, grace_s=60)


def wait_for_location(url: str, process: subprocess.Popen, log_path: Path) -> None:
    query = {"query": "{ workspaceOrError { ... on Workspace { locationEntries { name "
                      "locationOrLoadError { __typename } } } } }"}
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            answer = requests.post(f"{url}/graphql", json=query, timeout=5).json()
            entries = answer["data"]["workspaceOrError"]["locationEntries"]
            loaded = [e["locationOrLoadError"] for e in entries if e["name"] == "carsdepo"]
            if loaded and loaded[0] and loaded[0]["__typename"] == "RepositoryLocation":
                return
        except (requests.RequestException, KeyError, TypeError, ValueError):
            pass
        time.sleep(2)
    pytest.fail(f"dagster dev did not load the carsdepo code location:\n"
                f"{log_path.read_text()[-4000:]}")


# A group box of the lineage graph: an SVG foreignObject holding the group's name as tooltip.
GRAPH_GROUP_NAMES = ("//*[local-name()='foreignObject' and contains(@class, 'group')]"
                     "//*[@data-tooltip]")


def groups_in_graph(driver) -> set[str]:
    return {element.get_attribute("data-tooltip")
            for element in driver.find_elements("xpath", GRAPH_GROUP_NAMES)}


def dismiss_welcome_dialog(driver) -> None:
    """A fresh DAGSTER_HOME gets Dagster's "join the community" dialog over the graph."""
    for button in driver.find_elements("xpath", "//button[normalize-space()='Skip']"):
        button.click()


def test_asset_graph_shows_every_carsdepo_asset_group(dagster_dev, chromium):
    from selenium.webdriver.support.ui import WebDriverWait

    from carsdepo_assets.definitions import defs

    groups = {node.group_name for node in defs.resolve_asset_graph().asset_nodes}
    chromium.get(f"{dagster_dev}/asset-groups")
    try:
        WebDriverWait(chromium, RENDER_WAIT_S, poll_frequency=2).until(
            lambda driver: groups <= groups_in_graph(driver))
        dismiss_welcome_dialog(chromium)
    finally:
        save_screenshot(chromium, "asset-graph.png")

    assert {"ingestion", "labeling", "datasets", "training", "monitoring"} <= groups
    assert groups_in_graph(chromium) == groups


RUNS_OF_JOB = """query ($job: String!) { pipelineOrError(params: {pipelineName: $job,
  repositoryName: "__repository__", repositoryLocationName: "carsdepo"}) {
  ... on Pipeline { runs { runId tags { key value } } } } }"""
TICKS_OF_SENSOR = """query ($sensor: String!) { sensorOrError(sensorSelector: {sensorName: $sensor,
  repositoryName: "__repository__", repositoryLocationName: "carsdepo"}) {
  ... on Sensor { sensorState { status ticks { status runIds } } } } }"""


def graphql(url: str, query: str, **variables) -> dict:
    answer = requests.post(f"{url}/graphql", json={"query": query, "variables": variables},
                           timeout=60).json()
    assert "errors" not in answer, answer
    return answer["data"]


def test_runs_the_cli_and_sensors_start_show_on_their_job_and_sensor_pages(
    carsdepo_home, chromium
):
    """A sensor tick and the run it started, made by carsdepo before `dagster dev` starts, are
    what the UI shows: the run on ingest_job's page, the tick on landing_zone_sensor's."""
    from selenium.webdriver.support.ui import WebDriverWait

    from carsdepo_assets.cli.sensor_ticks import tick_sensor
    from carsdepo_assets_tests.cli.test_sensor_ticks import land

    land(carsdepo_home, "b1", 2)
    ((_, result),) = tick_sensor("landing_zone_sensor", carsdepo_home).runs

    with dagster_dev_on(carsdepo_home) as url:
        runs = graphql(url, RUNS_OF_JOB, job="ingest_job")["pipelineOrError"]["runs"]
        sensor = graphql(url, TICKS_OF_SENSOR, sensor="landing_zone_sensor")["sensorOrError"]
        chromium.get(f"{url}/locations/carsdepo/jobs/ingest_job/runs")
        try:
            WebDriverWait(chromium, RENDER_WAIT_S, poll_frequency=2).until(
                lambda driver: result.run_id[:8] in driver.page_source)
            dismiss_welcome_dialog(chromium)
        finally:
            save_screenshot(chromium, "ingest-job-runs.png")

    assert [run["runId"] for run in runs] == [result.run_id]
    tags = {tag["key"]: tag["value"] for tag in runs[0]["tags"]}
    assert tags["dagster/sensor_name"] == "landing_zone_sensor"
    assert tags["carsdepo/started_by"] == "sensor"
    ticks = sensor["sensorState"]["ticks"]
    assert [(tick["status"], tick["runIds"]) for tick in ticks] == [("SUCCESS", [result.run_id])]
