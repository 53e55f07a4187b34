"""The dataset rules behind the asset checks, each shown passing and failing."""

from __future__ import annotations

import pytest

from carsdepo_assets.datasets.validation import (
    boxes_inside_images,
    class_share_floor,
    min_annotated_images,
    no_split_leakage,
)
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, DENT, SCRATCH, coco_categories


def split(images: list[dict], boxes: list[tuple[int, str, list[float]]] = ()) -> dict:
    """A COCO split; ``boxes`` are (image id, class, bbox)."""
    return {
        "images": images,
        "annotations": [
            {"id": n, "image_id": image_id, "category_id": CATEGORY_ID_BY_NAME[label],
             "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
            for n, (image_id, label, bbox) in enumerate(boxes, 1)
        ],
        "categories": coco_categories(),
    }


def image(image_id: int, sha: str, group: str | None = None) -> dict:
    return {"id": image_id, "file_name": f"{sha[:2]}/{sha}.jpg", "width": 100, "height": 80,
            "sha256": sha, "group": group}


@pytest.mark.parametrize("bbox", [[0, 0, 100, 80], [10.5, 20, 30, 60.005]])
def test_boxes_within_the_image_pass(bbox):
    assert boxes_inside_images({"train": split([image(1, "aa")], [(1, DENT, bbox)])}).passed


@pytest.mark.parametrize(
    "bbox", [[80, 10, 21, 10], [-1, 10, 5, 5], [10, 75, 5, 6], [10, 10, 0, 5], [10, 10, 5, -2]]
)
def test_a_box_outside_or_empty_fails_naming_its_image(bbox):
    boxes = [(2, SCRATCH, bbox), (1, DENT, [1, 1, 5, 5])]
    passed, details = boxes_inside_images({"val": split([image(1, "aa"), image(2, "bb")], boxes)})
    assert not passed
    assert details["bad_boxes"] == 1
    assert details["examples"][0]["sha256"] == "bb" and details["examples"][0]["split"] == "val"


def test_distinct_images_and_groups_do_not_leak():
    cocos = {"train": split([image(1, "aa", "g1")]), "test": split([image(1, "bb", "g2")])}
    assert no_split_leakage(cocos).passed


def test_an_image_in_two_splits_is_leakage():
    passed, details = no_split_leakage(
        {"train": split([image(1, "aa")]), "test": split([image(1, "aa")])}
    )
    assert not passed
    assert details["image_examples"] == [{"key": "aa", "splits": ["test", "train"]}]


def test_copies_of_one_photo_in_two_splits_are_leakage():
    passed, details = no_split_leakage(
        {"train": split([image(1, "aa", "photo")]), "val": split([image(1, "bb", "photo")])}
    )
    assert not passed
    assert details["groups_in_several_splits"] == 1


def test_negatives_do_not_count_towards_the_minimum_of_annotated_images():
    cocos = {
        "train": split([image(1, "aa"), image(2, "bb"), image(3, "cc")], [(1, DENT, [1, 1, 5, 5])]),
        "val": split([image(1, "dd")], [(1, SCRATCH, [1, 1, 5, 5])]),
        "test": split([image(1, "ee")]),
    }
    passed, details = min_annotated_images(cocos, {"train": 2, "val": 1, "test": 1})
    assert not passed
    assert details["below"] == {
        "train": {"annotated_images": 1, "minimum": 2},
        "test": {"annotated_images": 0, "minimum": 1},
    }
    assert min_annotated_images(cocos, {"train": 1, "val": 1, "test": 0}).passed


def test_a_rare_class_falls_under_the_share_floor():
    boxes = [(1, SCRATCH, [1, 1, 5, 5])] * 39 + [(1, DENT, [1, 1, 5, 5])]
    cocos = {"train": split([image(1, "aa")], boxes)}
    passed, details = class_share_floor(cocos, floor=0.05)
    assert not passed
    assert details["below"] == [DENT] and details["shares"][DENT] == 0.025
    assert class_share_floor(cocos, floor=0.02).passed


def test_a_dataset_without_boxes_fails_the_class_share_floor():
    passed, details = class_share_floor({"train": split([image(1, "aa")])})
    assert not passed
    assert details["below"] == sorted([SCRATCH, DENT])
