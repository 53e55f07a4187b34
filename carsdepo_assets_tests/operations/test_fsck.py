"""Damaged state: ``carsdepo fsck`` finds and names every kind of damage, ``--repair`` mends
what it can; processes are known by pid and start time, so a reused pid or a copied state
folder takes nothing over."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from carsdepo_assets.cli.runner import (
    HOST_TAG,
    PID_STARTED_TAG,
    PID_TAG,
    fail_abandoned_runs,
    prepare_dagster_home,
)
from carsdepo_assets.fileio import process_started, same_process_running
from carsdepo_assets.labeling import server
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import LabelStudioServer


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_a_live_pid_with_another_start_time_is_another_process() -> None:
    """A real live process: its pid with its own start time is it; the same pid recorded with
    an earlier start time is what a killed process's record looks like once the pid is reused."""
    process = _sleeper()
    try:
        started = process_started(process.pid)
        assert started is not None
        assert same_process_running(process.pid, started)
        assert not same_process_running(process.pid, started - 30)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert not same_process_running(process.pid, started)


def _in_flight_run(instance: DagsterInstance, pid: int, started: float | None) -> str:
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname()}
    if started is not None:
        tags[PID_STARTED_TAG] = repr(started)
    run = create_run_for_test(instance, "ingest_job", status=DagsterRunStatus.STARTED, tags=tags)
    return run.run_id


def test_a_run_whose_pid_was_reused_is_marked_failed_a_live_ones_kept(
    carsdepo_home: StateLayout,
) -> None:
    """Two runs recorded with the pid of one real live process: one with its start time (its
    process still runs), one with an earlier start time (its process was killed and the pid
    reused, as in a container restarted with small pids)."""
    process = _sleeper()
    try:
        instance = DagsterInstance.from_config(prepare_dagster_home(carsdepo_home.ensure()))
        started = process_started(process.pid)
        live = _in_flight_run(instance, process.pid, started)
        reused = _in_flight_run(instance, process.pid, started - 30)
        assert fail_abandoned_runs(instance) == [reused]
        assert instance.get_run_by_id(live).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(reused).status == DagsterRunStatus.FAILURE
        instance.dispose()
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.label_studio
def test_a_copied_state_folder_never_takes_over_the_original_label_studio(
    label_studio_server: LabelStudioServer, tmp_path: Path,
) -> None:
    """The copy's server record names the original's pid, port and data folder: the copy's
    status, stop and token see no server of theirs, and the original keeps running."""
    original = label_studio_server.layout
    copy = StateLayout(tmp_path / "copy").ensure()
    shutil.copyfile(original.label_studio_server_file, copy.label_studio_server_file)
    (copy.label_studio / server.DATA_FOLDER).mkdir()

    assert server.status(copy) is None
    assert server.stop(copy) is False
    with pytest.raises(server.MissingSecret):
        server.api_token(label_studio_server.url, copy, environ={})
    assert server.status(original) == label_studio_server.info
    assert server.api_token(label_studio_server.url, original, environ={}) == \
        server.DEFAULT_TOKEN


def test_a_server_record_whose_pid_was_reused_is_not_trusted(
    carsdepo_home: StateLayout,
) -> None:
    """A record of this state folder naming a live process by pid with another start time
    (a real process, renamed label-studio so that only the start time tells it apart)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "label-studio"])
    try:
        layout = carsdepo_home.ensure()
        info = server.ServerInfo(
            "http://127.0.0.1:18400", process.pid, str(layout.label_studio / server.DATA_FOLDER),
            str(layout.label_studio / server.LOG_FILE), str(layout.root),
            process_started(process.pid) - 30)
        layout.label_studio_server_file.write_text(json.dumps(info.__dict__))
        assert server.status(layout) is None
        assert server.stop(layout) is False
        time.sleep(0.2)
        assert process.poll() is None  # never signalled
        assert not layout.label_studio_server_file.exists()
    finally:
        process.kill()
        process.wait(timeout=30)
