"""Reading labelled COCO files: class folding, dropped boxes, negatives, groups (no server)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from carsdepo_assets.labeling.coco_import import (
    CocoImportError,
    group_key,
    load_category_map,
    parse_coco,
)
from carsdepo_assets_tests.labeling.batches import LENSOR, requires_lensor

TEST_SPLIT = LENSOR / "annotations" / "instances_test.json"


def write_coco(path: Path, categories: list[str], boxes: dict[str, list[tuple]]) -> Path:
    """A COCO file with one image per key of ``boxes``: (category name, x, y, w, h) each."""
    ids = {name: index + 1 for index, name in enumerate(categories)}
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for image_id, (file_name, image_boxes) in enumerate(boxes.items(), start=1):
        coco["images"].append({"id": image_id, "file_name": file_name, "width": 100,
                               "height": 80})
        for name, *bbox in image_boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1,
                                        "image_id": image_id, "category_id": ids[name],
                                        "bbox": bbox})
    path.write_text(json.dumps(coco))
    return path


@requires_lensor
def test_lensor_test_split_keeps_every_scratch_and_dent_box_and_pins_the_split():
    parsed = parse_coco(TEST_SPLIT, keep_split="test")
    assert len(parsed.images) == 76 and parsed.split == "test"
    assert parsed.boxes_by_class == {"scratch": 117, "dent": 37}
    assert parsed.dropped_by_category == Counter({"moderate-broken": 1, "severe-broken": 4})
    assert parsed.negatives == 1
    for image in parsed.images:
        assert image.excluded == (not image.boxes and image.dropped_boxes > 0)
        assert image.group == image.file_name.split(".rf.")[0]


def test_an_image_with_only_dropped_boxes_is_excluded_not_negative(tmp_path: Path):
    path = write_coco(tmp_path / "c.json", ["minor-dent", "severe-broken"], {
        "dent.jpg": [("minor-dent", 1, 2, 3, 4), ("severe-broken", 5, 5, 5, 5)],
        "broken.jpg": [("severe-broken", 5, 5, 5, 5)],
        "flat.jpg": [("minor-dent", 5, 5, 0, 5)],
        "clean.jpg": [],
    })
    parsed = parse_coco(path)
    by_name = {image.file_name: image for image in parsed.images}
    assert [box.label for box in by_name["dent.jpg"].boxes] == ["dent"]
    assert parsed.excluded == ["broken.jpg", "flat.jpg"]
    assert [image.file_name for image in parsed.images if image.negative] == ["clean.jpg"]
    assert parsed.invalid_boxes == 1 and parsed.dropped_by_category == {"severe-broken": 2}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_category_map_file_folds_classes_first_match_first(tmp_path: Path, suffix: str):
    path = tmp_path / f"map{suffix}"
    rules = {"paint-chip": "scratch", "severe-*": None, "*-dent": "dent"}
    path.write_text(json.dumps(rules))  # JSON is valid YAML too
    category_map = load_category_map(path)
    assert [category_map.target(name) for name in
            ("paint-chip", "severe-dent", "minor-dent", "minor-scratch")] == [
        "scratch", None, "dent", None]


def test_a_category_map_naming_an_unknown_class_is_refused_with_file_and_key(tmp_path: Path):
    path = tmp_path / "map.yaml"
    path.write_text("minor-dent: dent\nrust: corrosion\n")
    with pytest.raises(CocoImportError, match=r"map.yaml: 'rust' maps to 'corrosion'"):
        load_category_map(path)


def test_bad_coco_input_gets_an_error_naming_file_and_item(tmp_path: Path):
    path = write_coco(tmp_path / "c.json", ["dent"], {"a.jpg": [("dent", 1, 1, 2, 2)]})
    coco = json.loads(path.read_text())
    coco["annotations"][0]["category_id"] = 9
    path.write_text(json.dumps(coco))
    with pytest.raises(CocoImportError, match=r"c.json: annotation #0 .*unknown category_id 9"):
        parse_coco(path)
    with pytest.raises(CocoImportError, match="--keep-splits 'holdout'"):
        parse_coco(path, keep_split="holdout")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CocoImportError, match="broken.json: not valid JSON"):
        parse_coco(tmp_path / "broken.json")


def test_group_key_is_the_source_photo_behind_roboflow_copies():
    assert group_key("train/0017_JPEG_jpg.rf.6e21a4cd.jpg") == "0017_JPEG_jpg"
    assert group_key("panel_00003.jpg") == "panel_00003"
