"""Damaged state: ``carsdepo fsck`` finds and names every kind of damage, ``--repair`` mends
what it can; processes are known by pid and start time, so a reused pid or a copied state
folder takes nothing over."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from carsdepo_assets.cli import main
from carsdepo_assets.cli.fsck import cmd_fsck
from carsdepo_assets.cli.runner import (
    HOST_TAG,
    PID_STARTED_TAG,
    PID_TAG,
    fail_abandoned_runs,
    prepare_dagster_home,
)
from carsdepo_assets.cli.state_checks import check_state
from carsdepo_assets.fileio import (
    DamagedFile,
    DiskFull,
    explain_state_error,
    process_started,
    raise_if_disk_full,
    same_process_running,
)
from carsdepo_assets.images.ingest import ingest_batch, load_manifest
from carsdepo_assets.images.manifest import GONE, BatchManifest
from carsdepo_assets.images.store import ImageStore, sha256_hex
from carsdepo_assets.labeling import server
from carsdepo_assets.labeling.history import write_snapshot
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import LabelStudioServer
from carsdepo_assets_tests.images.samples import encode, jpeg, photo, write


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


@pytest.mark.label_studio
def test_a_server_record_naming_a_port_its_process_does_not_listen_on_is_not_trusted(
    label_studio_server: LabelStudioServer,
) -> None:
    """The record's pid, start time and data folder are right, its port is not."""
    record = label_studio_server.layout.label_studio_server_file
    kept = record.read_text()
    try:
        payload = json.loads(kept)
        payload["url"] = "http://127.0.0.1:18401"
        record.write_text(json.dumps(payload))
        with pytest.raises(server.MissingSecret):  # no token for a server not at that port
            server.api_token(payload["url"], label_studio_server.layout, environ={})
        assert server.status(label_studio_server.layout) is None
    finally:
        record.write_text(kept)
    assert server.status(label_studio_server.layout) == label_studio_server.info


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


# -- carsdepo fsck ----------------------------------------------------------------------------


def _ingested(layout: StateLayout, batch: str, seeds: range) -> BatchManifest:
    source = layout.landing / batch
    for seed in seeds:
        write(source / f"car-{seed}.jpg", jpeg(seed))
    write(source / "grey.png", encode(photo(seeds.start + 50, mode="L"), "PNG"))  # normalised
    return ingest_batch(source, batch, layout)


def _fsck(layout: StateLayout, repair: bool = False) -> tuple[int, str]:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = cmd_fsck(argparse.Namespace(repair=repair), layout)
    return code, output.getvalue()


def test_fsck_of_a_sound_state_folder_finds_nothing(carsdepo_home: StateLayout) -> None:
    _ingested(carsdepo_home, "b1", range(1, 4))
    write_snapshot(AnnotationSnapshot(), carsdepo_home.annotations)
    assert check_state(carsdepo_home) == []
    code, out = _fsck(carsdepo_home)
    assert (code, out.strip()) == (0, f"carsdepo fsck: {carsdepo_home.root}: 0 problem(s)")


def test_fsck_names_damaged_and_missing_images_and_repair_stores_them_again(
    carsdepo_home: StateLayout,
) -> None:
    """A truncated JPEG kept as is, a deleted normalised PNG (re-made from its grey source),
    and a truncated image whose source file is gone (cannot be repaired: said so)."""
    manifest = _ingested(carsdepo_home, "b1", range(1, 5))
    rows = {row.path: row for row in manifest.rows}
    store = ImageStore(carsdepo_home.images)
    truncated = store.path_for(rows["car-1.jpg"].sha256)
    truncated.write_bytes(truncated.read_bytes()[:400])
    deleted = store.path_for(rows["grey.png"].sha256)
    deleted.unlink()
    lost = store.path_for(rows["car-2.jpg"].sha256)
    lost.write_bytes(b"")
    (carsdepo_home.landing / "b1" / "car-2.jpg").write_bytes(jpeg(77))  # the source changed

    code, out = _fsck(carsdepo_home)
    assert code == 1
    assert (f"problem: {truncated}: its 400 bytes no longer match its sha256 (truncated or "
            "overwritten)\n  fix: run `carsdepo fsck --repair`") in out
    assert f"problem: {lost}: it is empty" in out
    assert (f"problem: {carsdepo_home.manifest_path('b1')}: image {rows['grey.png'].sha256} "
            "(of grey.png) is missing from the image store") in out
    assert out.rstrip().endswith("3 problem(s)")

    code, out = _fsck(carsdepo_home, repair=True)
    assert code == 1 and out.rstrip().endswith("1 problem(s), 2 repaired")
    assert f"repaired: {truncated}" in out and "done: stored again from its batch folder" in out
    assert f"problem: {lost}: it is empty\n  fix: no source file holds this image any more" in out
    assert sha256_hex(truncated.read_bytes()) == rows["car-1.jpg"].sha256
    assert sha256_hex(deleted.read_bytes()) == rows["grey.png"].sha256
    assert [finding.path for finding in check_state(carsdepo_home)] == [lost]


def test_fsck_finds_unreferenced_images_and_repair_lists_them_in_their_batch(
    carsdepo_home: StateLayout,
) -> None:
    """An image left out of its batch's manifest (what a failed batch once left), and the
    images of a batch whose ingestion never wrote a manifest."""
    manifest = _ingested(carsdepo_home, "b1", range(1, 4))
    left_out = manifest.rows[0]
    manifest.rows.remove(left_out)
    manifest.save(carsdepo_home.manifest_path("b1"))
    unfinished = _ingested(carsdepo_home, "b2", range(10, 11))
    carsdepo_home.manifest_path("b2").unlink()
    store = ImageStore(carsdepo_home.images)

    findings = check_state(carsdepo_home)
    by_path = {finding.path: finding for finding in findings}
    assert len(findings) == 3
    orphan = by_path[store.path_for(left_out.sha256)]
    assert orphan.problem == "stored image referenced by no manifest (owner: b1)"
    assert "list it in batch b1's manifest as 'gone from folder'" in orphan.repair
    for sha in unfinished.image_hashes():
        assert "batch b2 has no manifest" in by_path[store.path_for(sha)].repair

    repaired = check_state(carsdepo_home, repair=True)
    assert [finding.repaired for finding in repaired].count(True) == 1
    assert sha256_hex(store.path_for(left_out.sha256).read_bytes()) == left_out.sha256
    again = load_manifest(carsdepo_home, "b1")
    assert [(row.sha256, row.status) for row in again.gone] == [(left_out.sha256, GONE)]
    assert len(check_state(carsdepo_home)) == 2  # b2's, until it is ingested again


@pytest.mark.slow
def test_fsck_names_each_damaged_state_file_and_what_to_do(carsdepo_home: StateLayout) -> None:
    """Truncated manifest, annotation snapshot, dataset file, Dagster runs.db, model.pt; an
    MLflow database overwritten; LATEST naming a missing snapshot."""
    import torch

    _ingested(carsdepo_home, "b1", range(1, 3))
    manifest_path = carsdepo_home.manifest_path("b1")
    _truncate(manifest_path, 200)
    snapshot = write_snapshot(AnnotationSnapshot(clipped_boxes=1), carsdepo_home.annotations)
    _truncate(snapshot, 20)
    dataset = carsdepo_home.dataset_folder("abc123")
    dataset.mkdir(parents=True)
    (dataset / "dataset.json").write_text('{"version": "abc1')
    instance = DagsterInstance.from_config(prepare_dagster_home(carsdepo_home))
    create_run_for_test(instance, "ingest_job")
    instance.dispose()
    runs_db = next(carsdepo_home.dagster_home.rglob("runs.db"))
    _truncate(runs_db, 4096 + 100, keep_header=True)
    carsdepo_home.mlflow_db.write_bytes(b"not a database at all" * 100)
    weights = carsdepo_home.mlflow_artifacts / "exp" / "models" / "m-1" / "model.pt"
    weights.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1000)}, weights)
    _truncate(weights, 2000)

    code, out = _fsck(carsdepo_home)
    assert code == 1
    for path, words in [
        (manifest_path, "not valid JSON"),
        (snapshot, "not valid JSON"),
        (dataset / "dataset.json", "not valid JSON"),
        (runs_db, "SQLite"),
        (carsdepo_home.mlflow_db, "SQLite cannot read it: file is not a database"),
        (weights, "not a whole model archive"),
    ]:
        assert f"problem: {path}: " in out, path
        line = next(line for line in out.splitlines() if line.startswith(f"problem: {path}: "))
        assert words in line, line
    assert "fix: ingest batch b1 again from its folder" in out
    assert "fix: materialize the `annotations` asset again" in out
    (carsdepo_home.annotations / "LATEST").write_text("feedbeef0000\n")
    assert "names snapshot feedbeef0000.json, which is missing" in _fsck(carsdepo_home)[1]


def _truncate(path: Path, size: int, keep_header: bool = False) -> None:
    """Cut ``path`` to ``size`` bytes; ``keep_header``: keep the file's length but overwrite
    what follows its first ``size`` bytes (a database page torn mid-write)."""
    data = path.read_bytes()
    assert len(data) > size, f"{path} is only {len(data)} bytes"
    path.write_bytes(data[:size] + (b"\xff" * (len(data) - size) if keep_header else b""))


def test_carsdepo_fsck_runs_from_the_command_line(carsdepo_home: StateLayout, capsys) -> None:
    manifest = _ingested(carsdepo_home, "b1", range(1, 3))
    stored = ImageStore(carsdepo_home.images).path_for(manifest.rows[0].sha256)
    stored.write_bytes(b"junk")
    assert main(["fsck"]) == 1
    assert f"problem: {stored}: its 4 bytes no longer match" in capsys.readouterr().out
    assert main(["fsck", "--repair"]) == 0
    assert "0 problem(s), 1 repaired" in capsys.readouterr().out
    assert main(["fsck"]) == 0


def test_a_full_disk_names_the_folder_and_its_free_space(tmp_path: Path) -> None:
    """A real "no space left" error: /dev/full refuses every write with ENOSPC."""
    with pytest.raises(OSError) as raised, open("/dev/full", "wb", buffering=0) as full:
        full.write(b"x")
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(DiskFull, match=f"no space left to write in {tmp_path} "
                                       r"\([0-9,.]+ MB free\): free some space"):
        raise_if_disk_full(raised.value, tmp_path)
    raise_if_disk_full(PermissionError(errno.EACCES, "denied"), tmp_path)  # not a full disk


def test_sqlites_full_disk_and_damaged_database_errors_say_where_and_what_to_do(
    tmp_path: Path,
) -> None:
    """Real SQLite errors: a database capped at its current size (``max_page_count``) is
    "full" as on a full disk; a file cut short is "malformed"."""
    full_db = tmp_path / "full.db"
    with contextlib.closing(sqlite3.connect(full_db)) as connection:
        connection.execute("CREATE TABLE t (x BLOB)")
        connection.execute("PRAGMA max_page_count = 2")
        with pytest.raises(sqlite3.OperationalError) as full:
            connection.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert explain_state_error(full.value, tmp_path).startswith(
        f"database or disk is full: no space left to write in {tmp_path} (")

    damaged_db = tmp_path / "runs.db"
    with contextlib.closing(sqlite3.connect(damaged_db)) as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
        connection.commit()
    _truncate(damaged_db, 4096 * 3, keep_header=True)
    with pytest.raises(sqlite3.DatabaseError) as damaged, \
            contextlib.closing(sqlite3.connect(damaged_db)) as connection:
        connection.execute("SELECT count(*) FROM t WHERE x LIKE '%y%'").fetchall()
    assert explain_state_error(damaged.value, tmp_path) == (
        f"{damaged.value}: a database under {tmp_path} is damaged; `carsdepo fsck` names it "
        "and what to do")
    assert explain_state_error(ValueError("other"), tmp_path) == "other"


def test_loading_a_truncated_snapshot_dataset_or_model_names_the_file_and_the_repair(
    tmp_path: Path,
) -> None:
    """The loaders every stage uses, on files cut short (a bare JSONDecodeError or a 40-line
    torch traceback before)."""
    import torch

    from carsdepo_assets.datasets.coco import load_dataset
    from carsdepo_assets.detection.backends import WEIGHTS_FILE, get_backend
    from carsdepo_assets.detection.config import DetectorConfig

    snapshot = write_snapshot(AnnotationSnapshot(clipped_boxes=2), tmp_path)
    _truncate(snapshot, 10)
    with pytest.raises(DamagedFile, match=f"{snapshot} is damaged .*`annotations` asset again"):
        AnnotationSnapshot.load(snapshot)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.json").write_text('{"version": ')
    with pytest.raises(DamagedFile, match="dataset.json is damaged .*`curated_dataset` again"):
        load_dataset(tmp_path / "ds")
    weights = tmp_path / WEIGHTS_FILE
    torch.save({"w": torch.zeros(100)}, weights)
    _truncate(weights, 300)
    with pytest.raises(DamagedFile, match=f"{weights} is damaged \\(not a whole model file"):
        get_backend("auto").detector_class.load(tmp_path, DetectorConfig(), None)
