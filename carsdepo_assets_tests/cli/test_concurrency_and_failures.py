"""Several ``carsdepo`` processes on one state folder, hostile batch names, killed runs and the
failure messages of the runner. Concurrency is tested with real processes on a fresh
``CARSDEPO_HOME``; each command takes a few seconds (importing Dagster dominates)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from carsdepo_assets.cli import main
from carsdepo_assets.cli.runner import RunFailed, run_job
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.state import ENV_VAR, PROJECT_ROOT, InvalidName, StateLayout
from carsdepo_assets_tests.fixtures.label_studio import free_port
from carsdepo_assets_tests.images.samples import jpeg, write

FIRST_USE_TRIES = 3  # each try: two processes racing to create a fresh instance


def photos(folder: Path, count: int, first_seed: int) -> Path:
    for seed in range(first_seed, first_seed + count):
        write(folder / f"car-{seed:04d}.jpg", jpeg(seed))
    return folder


def carsdepo(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, ENV_VAR: str(home), "PYTHONWARNINGS": "ignore", "DAGSTER_HOME": ""}
    return subprocess.Popen([sys.executable, "-m", "carsdepo_assets.cli", *args],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def open_instance(home: Path) -> DagsterInstance:
    return DagsterInstance.from_config(str(StateLayout(home).dagster_home))


@pytest.mark.slow
def test_two_processes_on_a_fresh_state_folder_leave_the_instance_intact(tmp_path: Path) -> None:
    for attempt in range(FIRST_USE_TRIES):
        home = tmp_path / f"home-{attempt}"
        first = photos(tmp_path / f"a-{attempt}", 2, 0)
        second = photos(tmp_path / f"b-{attempt}", 2, 10)
        racing = [carsdepo(home, "ingest", str(first), "--batch", "lot-a", "--json"),
                  carsdepo(home, "ingest", str(second), "--batch", "lot-b", "--json")]
        for process in racing:
            code, out, err = finish(process)
            assert code == 0, err[-3000:]
            assert json.loads(out)["counts"]["stored"] == 2
        instance = open_instance(home)
        runs = instance.get_runs()
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
        assert sorted(instance.get_dynamic_partitions(BATCHES_PARTITIONS_NAME)) == [
            "lot-a", "lot-b"]
        instance.dispose()
        code, _, err = finish(carsdepo(home, "init"))  # a later opening still works
        assert code == 0, err[-3000:]


@pytest.mark.slow
def test_two_concurrent_ingests_of_one_batch_orphan_no_image(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folders = {"a": photos(tmp_path / "a", 6, 0), "b": photos(tmp_path / "b", 4, 100)}
    racing = {name: carsdepo(home, "ingest", str(folder), "--batch", "lot", "--json")
              for name, folder in folders.items()}
    outcomes = {name: finish(process) for name, process in racing.items()}

    winners = [name for name, (code, _, _) in outcomes.items() if code == 0]
    assert len(winners) == 1, outcomes
    (winner,) = winners
    (loser,) = set(folders) - {winner}
    assert "already holds the photos of" in outcomes[loser][2]
    # the winner printed the counts of its own folder, and the manifest is its folder's
    printed = json.loads(outcomes[winner][1])
    assert printed["counts"]["stored"] == len(list(folders[winner].iterdir()))
    manifest = BatchManifest.load(StateLayout(home).manifest_path("lot"))
    assert manifest.source == str(folders[winner])
    store = ImageStore(StateLayout(home).images)
    owned = {path.name for path in (StateLayout(home).images / "owners").rglob("*")
             if path.is_file() and not path.name.endswith(".tmp")}
    assert owned == set(manifest.image_hashes())
    assert all(store.contains(sha) for sha in owned)


@pytest.mark.slow
def test_a_run_killed_mid_way_is_marked_failed_at_the_next_opening(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert finish(carsdepo(home, "init"))[0] == 0
    folder = photos(tmp_path / "big", 1500, 0)
    process = carsdepo(home, "ingest", str(folder), "--batch", "big")
    instance = open_instance(home)
    deadline = time.monotonic() + 120
    while not instance.get_runs() or instance.get_runs()[0].status != DagsterRunStatus.STARTED:
        assert process.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the run: 1,500 photos take far longer
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert instance.get_runs()[0].status == DagsterRunStatus.STARTED  # nobody ended it

    code, _, err = finish(carsdepo(home, "init"))

    assert code == 0, err[-3000:]
    (run,) = instance.get_runs()
    assert run.status == DagsterRunStatus.FAILURE
    state = StateLayout(home)
    assert not [p for p in state.root.rglob("*.tmp") if state.dagster_home not in p.parents]
    instance.dispose()


@pytest.mark.parametrize("name", ["../../evil", "/tmp/evil", ""])
def test_a_hostile_batch_name_registers_nothing_and_writes_nothing(
    carsdepo_home: StateLayout, tmp_path: Path, name: str, capsys
) -> None:
    folder = photos(tmp_path / "src", 1, 0)
    assert main(["ingest", str(folder), "--batch", name]) == 1
    assert "invalid batch name" in capsys.readouterr().err
    with pytest.raises(InvalidName):
        run_job("monitoring_job", carsdepo_home, partition_key=name)
    instance = DagsterInstance.get()
    assert instance.get_dynamic_partitions(BATCHES_PARTITIONS_NAME) == []
    assert instance.get_runs() == []
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil.json").exists()
    assert not list(carsdepo_home.manifests.iterdir())


def test_a_folder_with_spaces_becomes_a_valid_batch_by_default(
    carsdepo_home: StateLayout, tmp_path: Path, capsys
) -> None:
    folder = photos(tmp_path / "Lot 12 (June)", 1, 0)
    assert main(["ingest", str(folder)]) == 0
    assert "batch Lot-12-June: 1 files" in capsys.readouterr().out
    assert carsdepo_home.manifest_path("Lot-12-June").is_file()


def test_a_failed_run_names_the_step_and_the_cause(
    carsdepo_home: StateLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    with pytest.raises(RunFailed) as failed:
        run_job("dataset_job", carsdepo_home)
    message = str(failed.value)
    assert "annotations: LabelStudioUnavailable: Label Studio at " + url in message
    assert "is unreachable" in message and "Error occurred while executing op" not in message
