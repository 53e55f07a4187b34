"""``ChampionPrelabeler``: the champion's detections as Label Studio pre-annotations."""

from __future__ import annotations

import pytest

from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.prelabels import ImageToLabel
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.resources.prelabeler import ChampionPrelabeler
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.prediction.conftest import HEIGHT, WIDTH


def images_to_label(layout: StateLayout, manifest: BatchManifest) -> list[ImageToLabel]:
    store = ImageStore(layout.images)
    return [ImageToLabel(sha, store.path_for(sha), WIDTH, HEIGHT)
            for sha in manifest.image_hashes()]


@pytest.mark.slow
def test_champion_prelabels_every_image_naming_the_champion_version(
    carsdepo_home: StateLayout, champion: ModelRef, batch: BatchManifest
) -> None:
    images = images_to_label(carsdepo_home, batch)

    every_box = ChampionPrelabeler(min_score=0.0).predictions_for(images)
    no_box = ChampionPrelabeler(min_score=1.0).predictions_for(images)

    assert every_box.model_version == no_box.model_version == "carsdepo-damage-detector v1"
    assert list(every_box.detections) == batch.image_hashes()
    assert all(found for found in every_box.detections.values())  # every candidate kept
    assert all(found == [] for found in no_box.detections.values())  # shown as "no damage"


def test_without_a_champion_tasks_stay_plain(empty_registry: StateLayout,
                                             batch: BatchManifest) -> None:
    assert ChampionPrelabeler().predictions_for(images_to_label(empty_registry, batch)) is None
