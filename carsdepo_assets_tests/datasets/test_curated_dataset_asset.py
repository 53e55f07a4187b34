"""``curated_dataset`` and its checks, materialized in process from a snapshot on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetCheckSeverity, AssetSpec, Failure, materialize

from carsdepo_assets.assets.datasets import curated_dataset
from carsdepo_assets.checks.datasets import dataset_checks
from carsdepo_assets.datasets import load_dataset
from carsdepo_assets.datasets.splits import split_of
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledImage
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.taxonomy import DENT, SCRATCH


def groups_in(split: str, count: int) -> list[str]:
    """Group names the hash puts in ``split``, so the snapshot fills every split on purpose."""
    names = (f"photo-{n}" for n in range(1000))
    return [name for name in names if split_of(name) == split][:count]


def materialize_dataset(layout, snapshot: AnnotationSnapshot | None, **kwargs):
    if snapshot is not None:
        snapshot.save(layout.annotations)
    return materialize(
        [AssetSpec("annotations"), curated_dataset, *dataset_checks],
        resources={"carsdepo_home": CarsdepoHome(path=str(layout.root))},
        **kwargs,
    )


def check_outcomes(result) -> dict[str, tuple[bool, AssetCheckSeverity]]:
    return {
        evaluation.check_name: (evaluation.passed, evaluation.severity)
        for evaluation in result.get_asset_check_evaluations()
    }


def test_curated_dataset_materializes_with_stats_pictures_and_passing_checks(
    carsdepo_home, store_image
):
    images = [
        store_image(seed, ((SCRATCH, 5, 5, 40, 4), (DENT, 50, 20, 30, 30)), group=group)
        for seed, group in enumerate(
            groups_in("train", 4) + groups_in("val", 2) + groups_in("test", 2)
        )
    ] + [store_image(100 + n) for n in range(3)]
    result = materialize_dataset(carsdepo_home, AnnotationSnapshot(images))

    assert result.success
    dataset = load_dataset(Path(result.output_for_node("curated_dataset")))
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["version"].value == dataset.version
    assert metadata["images"].value == 11
    assert metadata["images_train"].value >= 4
    assert metadata["instances_scratch"].value == metadata["instances_dent"].value == 8
    assert metadata["negatives_share"].value == pytest.approx(3 / 11, abs=1e-4)
    assert metadata["missing_images"].value == 0
    assert "| **total** | 11 | 8 | 3 | 8 | 8 |" in metadata["splits"].value
    for key, alt in (("box_sizes", "box sizes"), ("samples", "train samples")):
        assert metadata[key].value.startswith(f"![{alt}](data:image/png;base64,")
    assert check_outcomes(result) == {
        "boxes_inside_images": (True, AssetCheckSeverity.ERROR),
        "no_split_leakage": (True, AssetCheckSeverity.ERROR),
        "min_annotated_images": (True, AssetCheckSeverity.ERROR),
        "class_share_floor": (True, AssetCheckSeverity.WARN),
    }


def test_each_dataset_check_fails_on_a_dataset_that_breaks_its_rule(carsdepo_home, store_image):
    """Published splits that leak a photo, a box past the edge, no dents, too few images."""
    outside = store_image(1, ((SCRATCH, 80, 10, 30, 5),), group="photo", fixed_split="train")
    leaked = store_image(2, ((SCRATCH, 1, 1, 10, 5),), group="photo", fixed_split="val")
    missing = LabeledImage("f" * 64, 96, 64, (), no_damage=True)  # not in the image store
    result = materialize_dataset(
        carsdepo_home, AnnotationSnapshot([outside, leaked, missing]), raise_on_error=False
    )

    assert not result.success  # blocking ERROR checks fail their step
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["missing_images"].value == 1
    assert check_outcomes(result) == {
        "boxes_inside_images": (False, AssetCheckSeverity.ERROR),
        "no_split_leakage": (False, AssetCheckSeverity.ERROR),
        "min_annotated_images": (False, AssetCheckSeverity.ERROR),
        "class_share_floor": (False, AssetCheckSeverity.WARN),
    }


def test_without_an_annotation_snapshot_the_run_fails_saying_what_to_do(carsdepo_home):
    with pytest.raises(Failure, match="materialize `annotations` first"):
        materialize_dataset(carsdepo_home, None)


def test_split_fractions_and_check_thresholds_come_from_run_config(carsdepo_home, store_image):
    images = [store_image(n, ((SCRATCH, 5, 5, 40, 4), (DENT, 50, 20, 30, 30))) for n in range(3)]
    run_config = {"ops": {
        "curated_dataset": {"config": {"train_fraction": 1.0, "val_fraction": 0.0,
                                       "test_fraction": 0.0}},
        "curated_dataset_min_annotated_images": {"config": {"train": 3, "val": 0, "test": 0}},
        "curated_dataset_class_share_floor": {"config": {"floor": 0.6}},
    }}
    result = materialize_dataset(
        carsdepo_home, AnnotationSnapshot(images), run_config=run_config
    )

    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["images_train"].value == 3
    outcomes = check_outcomes(result)
    assert outcomes["min_annotated_images"] == (True, AssetCheckSeverity.ERROR)
    assert outcomes["class_share_floor"] == (False, AssetCheckSeverity.WARN)  # each class is 50 %
