"""The runner: a job runs on the state folder it is handed, in that folder's Dagster instance,
whatever the process environment says, and leaves the environment as it found it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
