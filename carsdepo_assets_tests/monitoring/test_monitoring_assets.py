"""The monitoring assets and drift_sensor, run for real: synthetic batches, whylogs profiles,
in-process Dagster materializations, the sensor evaluated against the same instance; with a
real registered champion (the prediction tests' tiny detector), its backbone embeds the photos
and batch_predictions' answers are profiled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from PIL import Image

from carsdepo_assets.assets.monitoring import (
    NO_CHAMPION_NOTE,
    batch_profile,
    content_projection_path,
    drift_report,
    reference_profile,
    retraining_decision,
)
from carsdepo_assets.checks.monitoring import drift_within_policy
from carsdepo_assets.datasets import build_dataset
from carsdepo_assets.images.ingest import ingest_batch, iter_stored_images
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledImage
from carsdepo_assets.monitoring.embedding import Projection, fit_projection
from carsdepo_assets.monitoring.features import PREDICTION_FEATURES, iter_image_features
from carsdepo_assets.monitoring.profiles import profile_rows, read_profile, write_profile
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.prediction.batch import predict_batch
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.pyfunc import load_registered_detector
from carsdepo_assets.resources.mlflow import ModelRegistry
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
    """The decision on ``batch``, with the description of its drift check under "check"."""
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [batch])
    result = materialize(
        [batch_profile, drift_report, retraining_decision, drift_within_policy],
        partition_key=batch,
        instance=instance,
        resources={"carsdepo_home": CarsdepoHome(path=str(layout.root)),
                   "model_registry": ModelRegistry(carsdepo_home=CarsdepoHome(
                       path=str(layout.root))),
                   "drift_policy": DriftPolicy()},
    )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    return {**result.output_for_node("retraining_decision"), "check": check.description}


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
    assert very_dim["moved_signals"] == ("light",)
    assert very_dim["check"].endswith("signals moved: light")
    assert (carsdepo_home.reports / "decisions" / "dark-b.json").is_file()
    report = json.loads(carsdepo_home.drift_report_path("dark-b").read_text())
    assert report["notes"] == [NO_CHAMPION_NOTE]  # no champion: light features only
    assert report["moved_signals"] == ["light"]


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
    assert first.run_requests[0].tags["carsdepo/moved_signals"] == "light"
    assert not getattr(again, "run_requests", None)


def turned_batch(layout: StateLayout, name: str, seed: int) -> str:
    """Normal-light panels turned to portrait: every light statistic stays, the content moves."""
    folder = generate_dataset(layout.root / "synthetic" / name, 30, seed, "normal", **SIZE)
    turned = layout.root / "synthetic" / f"{name}-turned"
    turned.mkdir()
    for path in sorted(folder.images_dir.glob("*.jpg")):
        with Image.open(path) as image:
            image.transpose(Image.Transpose.ROTATE_90).save(turned / path.name, quality=95)
    ingest_batch(turned, name, layout)
    return name


def curated_reference(layout: StateLayout) -> None:
    """A curated dataset of 60 normal panels (labelled "no damage": the labels do not matter to
    monitoring), built from the image store as curated_dataset builds it."""
    folder = generate_dataset(layout.root / "synthetic" / "reference", 60, 1, "normal", **SIZE)
    ingest_batch(folder.images_dir, "labelled", layout)
    build_dataset(AnnotationSnapshot(images=[
        LabeledImage(sha256=sha, width=SIZE["width"], height=SIZE["height"], boxes=(),
                     no_damage=True)
        for sha, _ in iter_stored_images(layout, "labelled")]), layout)


@pytest.mark.slow
def test_with_a_champion_the_content_signal_catches_panels_turned_to_portrait(
    carsdepo_home: StateLayout, instance: DagsterInstance, champion: ModelRef
):
    curated_reference(carsdepo_home)
    home = CarsdepoHome(path=str(carsdepo_home.root))
    reference = materialize([reference_profile], instance=instance, resources={
        "carsdepo_home": home, "model_registry": ModelRegistry(carsdepo_home=home)})
    batch = turned_batch(carsdepo_home, "portrait-b", 21)
    predict_batch(carsdepo_home, batch, load_registered_detector(champion.uri), champion)

    decision = decide_batch(carsdepo_home, instance, batch)

    made = reference.asset_materializations_for_node("reference_profile")[0].metadata
    assert "backbone embedding" in made["content"].value
    assert made["outputs"].value.startswith("the champion's answers on ")
    assert Projection.load(content_projection_path(carsdepo_home)).source["model_version"] == "1"
    profiled = read_profile(carsdepo_home.batch_profile_path(batch)).get_columns()
    assert {"content_00", *PREDICTION_FEATURES} <= set(profiled)
    report = json.loads(carsdepo_home.drift_report_path(batch).read_text())
    signals = {item["signal"]: item for item in report["signals"]}
    assert signals["light"]["moved"] is False and signals["content"]["moved"] is True
    assert decision["action"] != "no_action" and "content" in decision["moved_signals"]
    # the champion's answers are compared with its answers on the val split's photos
    assert signals["outputs"]["tested"] >= 3 and not report["missing_in_reference"]


@pytest.mark.slow
def test_a_content_projection_of_another_embedding_size_is_skipped_with_what_to_do(
    carsdepo_home: StateLayout, instance: DagsterInstance, champion: ModelRef
):
    """A reference profiled by an older carsdepo (another embedding size) leaves the batch on
    its light features, with a note saying to profile the reference again: no failed run."""
    curated_reference(carsdepo_home)
    home = CarsdepoHome(path=str(carsdepo_home.root))
    resources = {"carsdepo_home": home, "model_registry": ModelRegistry(carsdepo_home=home)}
    materialize([reference_profile], instance=instance, resources=resources)
    path = content_projection_path(carsdepo_home)
    saved = Projection.load(path)
    older = np.random.default_rng(0).normal(size=(20, saved.dimensions // 4))
    fit_projection(older, 4, saved.source).save(path)
    batch = turned_batch(carsdepo_home, "portrait-c", 22)
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [batch])

    result = materialize([batch_profile], partition_key=batch, instance=instance,
                         resources=resources)

    note = result.asset_materializations_for_node("batch_profile")[0].metadata["content"].value
    assert note.startswith("not profiled: the reference's content projection")
    assert "materialize reference_profile again" in note
    profiled = read_profile(carsdepo_home.batch_profile_path(batch)).get_columns()
    assert "brightness_mean" in profiled and "content_00" not in profiled


def test_drift_sensor_starts_one_sweep_for_the_drifted_batches_of_one_tick(
    carsdepo_home: StateLayout, instance: DagsterInstance
):
    """Two batches that call for experimentation, seen in one tick: one sweep of the dataset,
    for the newer batch, tagged with both."""
    write_reference(carsdepo_home)
    for name, seed in (("dark-d", 15), ("dark-e", 16)):
        decide_batch(carsdepo_home, instance,
                     synthetic_batch(carsdepo_home, name, "very-dim", seed))

    result = drift_sensor(build_sensor_context(instance=instance))

    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [
        ("experimentation_job", "dark-e")
    ]
    assert result.run_requests[0].tags["carsdepo/drifted_batches"] == "dark-d, dark-e"
    assert result.run_requests[0].tags["carsdepo/moved_signals"] == "light"


def test_an_unchanged_reference_is_kept_and_a_new_dataset_or_a_replaced_file_profiles_again(
    carsdepo_home: StateLayout, instance: DagsterInstance
):
    curated_reference(carsdepo_home)
    home = CarsdepoHome(path=str(carsdepo_home.root))
    resources = {"carsdepo_home": home, "model_registry": ModelRegistry(carsdepo_home=home)}

    def materialized() -> dict:
        result = materialize([reference_profile], instance=instance, resources=resources)
        return result.asset_materializations_for_node("reference_profile")[0].metadata

    first = materialized()
    written = carsdepo_home.reference_profile_path().stat().st_mtime_ns
    again = materialized()

    assert "kept" not in first and "kept" in again
    assert again["rows"].value == first["rows"].value
    assert again["dataset_version"].value == first["dataset_version"].value
    assert carsdepo_home.reference_profile_path().stat().st_mtime_ns == written
    # a profile replaced behind the asset's back is profiled again, not trusted
    write_reference(carsdepo_home)
    assert "kept" not in materialized()
    # a new dataset is a new reference while there is no champion
    folder = generate_dataset(carsdepo_home.root / "synthetic" / "more", 20, 5, "normal", **SIZE)
    ingest_batch(folder.images_dir, "more", carsdepo_home)
    build_dataset(AnnotationSnapshot(images=[
        LabeledImage(sha256=sha, width=SIZE["width"], height=SIZE["height"], boxes=(),
                     no_damage=True)
        for batch in ("labelled", "more") for sha, _ in iter_stored_images(carsdepo_home, batch)
    ]), carsdepo_home)
    renewed = materialized()
    assert "kept" not in renewed
    assert renewed["dataset_version"].value != first["dataset_version"].value
