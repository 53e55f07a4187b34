"""``raw_images`` and its checks materialized in-process by Dagster, for one batch partition."""

from __future__ import annotations

import pytest
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance, materialize

from carsdepo_assets.assets.ingestion import raw_images
from carsdepo_assets.checks.ingestion import raw_images_checks
from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.images.samples import bad_files, jpeg, write


@pytest.fixture
def instance() -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, ["b1"])
    return instance


def resources(layout: StateLayout) -> dict:
    return {"carsdepo_home": CarsdepoHome(path=str(layout.root))}


def run(layout: StateLayout, instance: DagsterInstance, run_config=None):
    return materialize(
        [raw_images, *raw_images_checks],
        partition_key="b1",
        instance=instance,
        resources=resources(layout),
        run_config=run_config,
    )


def run_checks_only(layout: StateLayout, instance: DagsterInstance):
    """The checks alone, later, on an unchanged manifest (as the UI's "Execute checks" does).

    Dagster 1.13 cannot take ``partition_key`` for a selection without assets, so the run is
    given the partition tag itself.
    """
    return materialize(
        [raw_images, *raw_images_checks],
        instance=instance,
        resources=resources(layout),
        selection=AssetSelection.checks_for_assets(raw_images),
        tags={"dagster/partition": "b1"},
    )


def check_results(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_materializing_a_batch_stores_it_and_passes_its_checks(
    carsdepo_home: StateLayout, instance: DagsterInstance
) -> None:
    for index in range(5):
        write(carsdepo_home.landing / "b1" / f"car-{index}.jpg", jpeg(index))
    write(carsdepo_home.landing / "b1" / "bad" / "notes.jpg", bad_files()["notes.jpg"][0])
    result = run(carsdepo_home, instance)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("raw_images")
    metadata = materialization.metadata
    assert materialization.partition == "b1"
    assert metadata["stored"].value == 5 and metadata["quarantined"].value == 1
    assert "| bad/notes.jpg | quarantined | not an image" in metadata["rejected"].value
    assert metadata["preview"].value.startswith("![stored images](data:image/jpeg;base64,")
    assert metadata["manifest"].value == str(carsdepo_home.manifest_path("b1"))
    assert load_manifest(carsdepo_home, "b1").counts["stored"] == 5
    checks = check_results(result)
    assert checks.keys() == {
        "every_input_file_accounted_for", "quarantined_share_under_limit",
        "every_stored_image_decodes",
    }
    assert all(check.passed for check in checks.values())
    assert checks["quarantined_share_under_limit"].partition == "b1"


def test_a_mostly_broken_batch_succeeds_with_a_quarantine_warning(
    carsdepo_home: StateLayout, instance: DagsterInstance
) -> None:
    write(carsdepo_home.landing / "b1" / "good.jpg", jpeg(1))
    for name, (content, _) in list(bad_files().items())[:3]:
        write(carsdepo_home.landing / "b1" / name, content)
    result = run(carsdepo_home, instance, run_config={
        "ops": {"raw_images_quarantined_share_under_limit": {"config": {"max_share": 0.5}}}
    })
    assert result.success
    share = check_results(result)["quarantined_share_under_limit"]
    assert not share.passed and share.severity == AssetCheckSeverity.WARN
    assert share.metadata["quarantined_share"].value == 0.75


def test_checks_fail_when_the_folder_or_the_store_changes_behind_the_manifest(
    carsdepo_home: StateLayout, instance: DagsterInstance
) -> None:
    write(carsdepo_home.landing / "b1" / "car.jpg", jpeg(1))
    assert run(carsdepo_home, instance).success
    write(carsdepo_home.landing / "b1" / "late-arrival.jpg", jpeg(2))
    sha = load_manifest(carsdepo_home, "b1").image_hashes()[0]
    stored = ImageStore(carsdepo_home.images).path_for(sha)
    stored.write_bytes(stored.read_bytes()[:300])  # bit rot: the stored file is cut short
    result = run_checks_only(carsdepo_home, instance)
    checks = check_results(result)
    accounted = checks["every_input_file_accounted_for"]
    assert not accounted.passed
    assert accounted.metadata["not_in_manifest"].value == ["late-arrival.jpg"]
    decodes = checks["every_stored_image_decodes"]
    assert not decodes.passed and decodes.severity == AssetCheckSeverity.ERROR
    assert decodes.partition == "b1"
    assert decodes.metadata["problems"].value[sha] == (
        f"{stored.name}: its 300 bytes no longer match its sha256 (truncated or overwritten); "
        "`carsdepo fsck --repair` restores it")
