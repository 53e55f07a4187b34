"""The landing zone: which folders are complete batches, and the sensor that registers them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from carsdepo_assets.images.landing import (
    INCOMPLETE_MARKER,
    QUIET_SECONDS,
    READY_MARKER,
    scan_landing,
)
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.sensors.landing_zone import landing_zone_sensor
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.images.samples import jpeg, write


def settled_batch(landing: Path, name: str, age_seconds: float = 3600) -> Path:
    """A batch folder whose files were last touched ``age_seconds`` ago."""
    folder = landing / name
    write(folder / "car.jpg", jpeg(len(name)))
    past = time.time() - age_seconds
    for path in [folder / "car.jpg", folder]:
        os.utime(path, (past, past))
    return folder


def test_only_settled_unmarked_new_folders_are_ready(tmp_path: Path) -> None:
    settled_batch(tmp_path, "ready")
    settled_batch(tmp_path, "known")
    write(settled_batch(tmp_path, "marked") / INCOMPLETE_MARKER, b"")
    write(tmp_path / "fresh" / "car.jpg", jpeg(1))
    (tmp_path / "empty").mkdir()
    settled_batch(tmp_path, "bad name")
    settled_batch(tmp_path, ".trash")
    folders = {f.name: f.waiting_reason for f in scan_landing(tmp_path, {"known"}, time.time())}
    assert folders.keys() == {"ready", "marked", "fresh", "empty", "bad name"}
    assert folders["ready"] is None
    assert "marker present" in folders["marked"]
    assert f"waiting for {QUIET_SECONDS:.0f} s without changes" in folders["fresh"]
    assert folders["empty"] == "empty folder"
    assert "invalid batch name" in folders["bad name"]


def test_a_ready_marker_skips_the_quiet_period_but_not_the_other_rules(tmp_path: Path) -> None:
    write(tmp_path / "uploaded" / "car.jpg", jpeg(1))  # written just now
    write(tmp_path / "uploaded" / READY_MARKER, b"")
    write(tmp_path / "only-marker" / READY_MARKER, b"")
    write(tmp_path / "both" / "car.jpg", jpeg(2))
    write(tmp_path / "both" / READY_MARKER, b"")
    write(tmp_path / "both" / INCOMPLETE_MARKER, b"")
    folders = {f.name: f.waiting_reason for f in scan_landing(tmp_path, set(), time.time())}
    assert folders == {"uploaded": None, "only-marker": "empty folder",
                       "both": f"still being written ({INCOMPLETE_MARKER} marker present)"}


def test_a_linked_landing_folder_is_never_ready(tmp_path: Path) -> None:
    settled_batch(tmp_path / "elsewhere", "real")
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "linked").symlink_to(tmp_path / "elsewhere" / "real")
    (folder,) = scan_landing(tmp_path / "landing", set(), time.time())
    assert not folder.ready and "links are never ingested" in folder.waiting_reason


def test_a_recent_change_deep_inside_a_batch_keeps_it_waiting(tmp_path: Path) -> None:
    folder = settled_batch(tmp_path, "b1")
    write(folder / "more" / "late.jpg", jpeg(2))
    (reason,) = [f.waiting_reason for f in scan_landing(tmp_path, set(), time.time())]
    assert reason is not None and "changed" in reason


def test_sensor_adds_a_new_batch_once_and_requests_its_ingestion(
    carsdepo_home: StateLayout,
) -> None:
    settled_batch(carsdepo_home.landing, "b1")
    instance = DagsterInstance.ephemeral()
    resources = {"carsdepo_home": CarsdepoHome(path=str(carsdepo_home.root))}

    def evaluate():
        return landing_zone_sensor(
            build_sensor_context(instance=instance, resources=resources)
        )

    first = evaluate()
    assert isinstance(first, SensorResult)
    assert [request.partition_key for request in first.run_requests] == ["b1"]
    (add,) = first.dynamic_partitions_requests
    assert add.partitions_def_name == BATCHES_PARTITIONS_NAME and list(add.partition_keys) == ["b1"]
    # What the sensor daemon does with the request; the next tick must not add b1 again.
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, list(add.partition_keys))
    assert isinstance(evaluate(), SkipReason)

    settled_batch(carsdepo_home.landing, "b2")
    third = evaluate()
    assert [request.partition_key for request in third.run_requests] == ["b2"]
