"""The runner: a job runs on the state folder it is handed, in that folder's Dagster instance,
whatever the process environment says, and leaves the environment as it found it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import RunsFilter
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from carsdepo_assets.cli.runner import ingest_batch_through_dagster, local_instance
from carsdepo_assets.state import ENV_VAR, StateLayout
from carsdepo_assets_tests.images.samples import jpeg


def test_a_job_runs_on_the_state_folder_it_is_given_not_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "decoy"
    monkeypatch.setenv(ENV_VAR, str(decoy))
    monkeypatch.setenv("DAGSTER_HOME", str(decoy / "dagster"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        (photos / f"car-{seed}.jpg").write_bytes(jpeg(seed))
    layout = StateLayout(tmp_path / "given").ensure()
    environment = dict(os.environ)

    manifest = ingest_batch_through_dagster(photos, "b1", layout)

    assert [row.status for row in manifest.rows] == ["stored"] * 3
    assert layout.manifest_path("b1").is_file()
    assert not decoy.exists()
    assert dict(os.environ) == environment
    with local_instance(layout) as instance:
        runs = instance.get_runs()
    assert [(run.job_name, run.tags.get("dagster/partition")) for run in runs] == [
        ("ingest_job", "b1")]


def test_a_cli_run_belongs_to_the_workspace_job_and_says_what_started_it(tmp_path: Path) -> None:
    """The Dagster UI lists a job's runs by job name and the code location's repository label,
    and draws the timeline from the run's job origin: a run made by the CLI has both."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "car.jpg").write_bytes(jpeg(1))
    layout = StateLayout(tmp_path / "home").ensure()

    ingest_batch_through_dagster(photos, "b1", layout)

    with local_instance(layout) as instance:
        (run,) = instance.get_runs()
        # the query of the UI's job page
        listed = instance.get_runs(RunsFilter(job_name="ingest_job", tags={
            REPOSITORY_LABEL_TAG: "__repository__@carsdepo"}))
    assert [listed_run.run_id for listed_run in listed] == [run.run_id]
    assert run.remote_job_origin.job_name == "ingest_job"
    assert run.remote_job_origin.repository_origin.code_location_origin.location_name == "carsdepo"
    assert run.tags["carsdepo/started_by"] == "cli"
