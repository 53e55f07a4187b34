"""COCO splits for training: bad input is refused before training with a message naming the file
and the entry; "None" images stay in as empty targets; augmentation moves boxes with pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carsdepo_assets.detection.data import (
    Augmentation,
    CocoSplit,
    DatasetError,
    load_split,
    training_sample,
)
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, coco_categories

SCRATCH, DENT = CATEGORY_ID_BY_NAME["scratch"], CATEGORY_ID_BY_NAME["dent"]


def _write_split(folder: Path, boxes_per_image: list[list[tuple[int, list[float]]]],
                 size: tuple[int, int] = (96, 64)) -> CocoSplit:
    """Grey panels with a dark bar inside each box; boxes are (category id, [x, y, w, h])."""
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for index, boxes in enumerate(boxes_per_image, start=1):
        image = Image.new("RGB", size, (150, 150, 160))
        for _, (x, y, w, h) in boxes:
            image.paste((20, 20, 20), (int(x), int(y), int(x + w), int(y + h)))
        image.save(folder / "images" / f"p{index}.png")
        images.append({"id": index, "file_name": f"p{index}.png",
                       "width": size[0], "height": size[1]})
        for category, bbox in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": index, "iscrowd": 0,
                                "category_id": category, "bbox": bbox,
                                "area": bbox[2] * bbox[3]})
    coco = {"images": images, "annotations": annotations, "categories": coco_categories()}
    (folder / "annotations.json").write_text(json.dumps(coco))
    return CocoSplit.from_folder(folder)


def _edit(split: CocoSplit, change) -> CocoSplit:
    coco = json.loads(split.annotations.read_text())
    change(coco)
    split.annotations.write_text(json.dumps(coco))
    return split


@pytest.fixture
def good_split(tmp_path) -> CocoSplit:
    return _write_split(tmp_path / "split", [
        [(SCRATCH, [10, 20, 30, 4])],
        [(DENT, [40, 10, 20, 20]), (SCRATCH, [5, 50, 40, 3])],
        [],  # a "None" image
    ])


def test_valid_split_loads_with_none_images_as_empty_targets(good_split):
    loaded = load_split(good_split, require_every_class=True)
    assert loaded.instances_per_class() == {"scratch": 2, "dent": 1}
    assert loaded.negatives == 1
    none_image = loaded.records[2]
    _, target = training_sample(none_image, 64, 96, None, np.random.default_rng(0))
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda coco: coco.update(images=[], annotations=[]), "has no images"),
        (lambda coco: coco.update(annotations=[]), "no boxes at all"),
        (lambda coco: coco.update(annotations=[a for a in coco["annotations"]
                                               if a["category_id"] != DENT]), "dent"),
        (lambda coco: coco["categories"].append({"id": 9, "name": "rust"}), "rust"),
        (lambda coco: coco["annotations"][0].update(bbox=[80, 20, 30, 4]), "id=1.*outside"),
        (lambda coco: coco["annotations"][1].update(bbox=[40, 10, 0, 20]), "id=2.*empty box"),
        (lambda coco: coco["annotations"][0].update(category_id=7), "category_id=7"),
        (lambda coco: coco["images"][0].update(file_name="gone.png"), "missing.*gone.png"),
        (lambda coco: coco["images"][1].update(width=200), "p2.png is 96x64"),
    ],
    ids=["no-images", "no-boxes", "class-without-instances", "unknown-category",
         "box-outside", "empty-box", "unknown-category-id", "missing-file", "wrong-size"],
)
def test_bad_training_split_is_refused_with_a_clear_error(good_split, change, message):
    with pytest.raises(DatasetError, match=message):
        load_split(_edit(good_split, change), require_every_class=True)


def test_missing_or_broken_annotation_file_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="absent.json"):
        load_split(CocoSplit(tmp_path / "absent.json", tmp_path), require_every_class=False)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json"):
        load_split(CocoSplit(broken, tmp_path), require_every_class=False)


def test_validation_split_may_lack_a_class(good_split):
    only_scratch = _edit(good_split, lambda coco: coco.update(
        annotations=[a for a in coco["annotations"] if a["category_id"] == SCRATCH]))
    assert load_split(only_scratch, require_every_class=False).instances_per_class()["dent"] == 0


def test_resizing_and_flipping_keep_each_box_on_its_dark_bar(good_split):
    record = load_split(good_split, require_every_class=True).records[1]
    flip_only = Augmentation(brightness=0.0, contrast=0.0, hflip=True)
    first_box_x1 = set()
    for seed in range(6):  # both flipped and unflipped draws
        image, target = training_sample(record, 128, 192, flip_only, np.random.default_rng(seed))
        assert image.shape == (3, 128, 192)  # 2x the 96x64 original
        for x1, y1, x2, y2 in target["boxes"].round().int().tolist():
            assert torch.all(image[:, y1 + 1:y2 - 1, x1 + 1:x2 - 1] < 0.2)  # inside: dark
        first_box_x1.add(float(target["boxes"][0, 0]))
    assert first_box_x1 == {80.0, 192.0 - 120.0}  # dent at x 40..60, scaled 2x, maybe mirrored
