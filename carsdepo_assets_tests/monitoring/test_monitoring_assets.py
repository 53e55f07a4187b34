"""The monitoring assets and drift_sensor, run for real: synthetic batches, whylogs profiles,
in-process Dagster materializations, the sensor evaluated against the same instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize

from carsdepo_assets.assets.monitoring import (
    batch_profile,
    drift_report,
    retraining_decision,
)
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.monitoring.features import iter_image_features
from carsdepo_assets.monitoring.profiles import profile_rows, write_profile
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.resources.monitoring import DriftPolicy
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.sensors.drift import drift_sensor
from carsdepo_assets.state import StateLayout
from carsdepo_assets.synth import generate_dataset

SIZE = {"width": 208, "height": 160}


def synthetic_batch(layout: StateLayout, name: str, lighting: str, seed: int) -> str:
    folder = generate_dataset(layout.root / "synthetic" / name, 40, seed, lighting, **SIZE)
    ingest_batch(folder.images_dir, name, layout)
    return name


def write_reference(layout: StateLayout) -> None:
    folder = generate_dataset(layout.root / "synthetic" / "reference", 60, 1, "normal", **SIZE)
    view = profile_rows(iter_image_features(sorted(folder.images_dir.glob("*.jpg"))))
    write_profile(view, layout.reference_profile_path())


def decide_batch(layout: StateLayout, instance: DagsterInstance, batch: str) -> dict:
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [batch])
    result = materialize(
        [batch_profile, drift_report, retraining_decision],
        partition_key=batch,
        instance=instance,
        resources={"carsdepo_home": CarsdepoHome(path=str(layout.root)),
                   "drift_policy": DriftPolicy()},
    )
    assert result.success
    return result.output_for_node("retraining_decision")


@pytest.fixture
def instance(tmp_path: Path):
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as instance:
        yield instance


def test_a_batch_like_the_reference_needs_no_action_and_a_very_dim_one_experimentation(
    carsdepo_home: StateLayout, instance: DagsterInstance
):
    write_reference(carsdepo_home)
    normal = decide_batch(carsdepo_home, instance,
                          synthetic_batch(carsdepo_home, "normal-b", "normal", 11))
    very_dim = decide_batch(carsdepo_home, instance,
                            synthetic_batch(carsdepo_home, "dark-b", "very-dim", 12))

    assert normal["action"] == "no_action"
    assert very_dim["action"] == "experiment"
    assert any("brightness" in reason for reason in very_dim["reasons"])
    assert (carsdepo_home.reports / "decisions" / "dark-b.json").is_file()


def test_without_a_reference_profile_the_decision_is_no_reference(
    carsdepo_home: StateLayout, instance: DagsterInstance
):
    decision = decide_batch(carsdepo_home, instance,
                            synthetic_batch(carsdepo_home, "first-b", "normal", 13))

    assert decision["action"] == "no_reference"


def test_drift_sensor_launches_experimentation_for_the_drifted_batch_once(
    carsdepo_home: StateLayout, instance: DagsterInstance
):
    write_reference(carsdepo_home)
    decide_batch(carsdepo_home, instance, synthetic_batch(carsdepo_home, "dark-c", "very-dim", 14))

    first = drift_sensor(build_sensor_context(instance=instance))
    again = drift_sensor(build_sensor_context(instance=instance, cursor=first.cursor))

    assert [(r.job_name, r.partition_key) for r in first.run_requests] == [
        ("experimentation_job", "dark-c")
    ]
    assert not getattr(again, "run_requests", None)
