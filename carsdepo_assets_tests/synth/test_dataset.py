"""``generate_dataset``: reproducible bytes, a COCO file pycocotools reads, honest clean share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, coco_categories

SMALL = {"width": 160, "height": 160}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_writes_the_same_bytes(tmp_path):
    first = generate_dataset(tmp_path / "a", 4, seed=3, **SMALL)
    second = generate_dataset(tmp_path / "b", 4, seed=3, **SMALL)
    assert folder_bytes(first.out_dir) == folder_bytes(second.out_dir)
    assert len(folder_bytes(first.out_dir)) == 5  # four photos and annotations.json


def test_different_seeds_give_different_photos(tmp_path):
    first = folder_bytes(generate_dataset(tmp_path / "a", 3, seed=1, **SMALL).images_dir)
    second = folder_bytes(generate_dataset(tmp_path / "b", 3, seed=2, **SMALL).images_dir)
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_a_photo_does_not_depend_on_how_many_are_generated(tmp_path):
    few = folder_bytes(generate_dataset(tmp_path / "a", 2, seed=8, **SMALL).images_dir)
    many = folder_bytes(generate_dataset(tmp_path / "b", 5, seed=8, **SMALL).images_dir)
    assert few == {name: many[name] for name in few}


def test_annotations_load_with_pycocotools_and_match_the_photos(tmp_path):
    result = generate_dataset(tmp_path / "synth", 12, seed=4, lighting="dim", **SMALL)
    coco = COCO(str(result.annotations_path))
    assert coco.loadCats(coco.getCatIds()) == coco_categories()
    assert len(coco.getImgIds()) == 12
    for image in coco.loadImgs(coco.getImgIds()):
        with Image.open(result.images_dir / image["file_name"]) as photo:
            assert photo.format == "JPEG"
            assert photo.size == (image["width"], image["height"]) == (160, 160)
    for annotation in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = annotation["bbox"]
        assert annotation["category_id"] in CATEGORY_ID_BY_NAME.values()
        assert annotation["area"] == w * h and annotation["iscrowd"] == 0
    info = json.loads(result.annotations_path.read_text())["info"]
    assert (info["seed"], info["lighting"]) == (4, "dim")
    counted = {name: len(coco.getAnnIds(catIds=[cid])) for name, cid in CATEGORY_ID_BY_NAME.items()}
    assert counted == result.instances_per_class
    clean = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=[i])]
    assert len(clean) == result.n_clean


@pytest.mark.parametrize(("clean_share", "n_images"), [(0.0, 30), (0.25, 200), (1.0, 30)])
def test_clean_share_is_respected(tmp_path, clean_share, n_images):
    result = generate_dataset(
        tmp_path / "synth", n_images, seed=6, clean_share=clean_share, **SMALL
    )
    assert result.n_clean / result.n_images == pytest.approx(clean_share, abs=0.06)
    if clean_share == 1.0:
        assert sum(result.instances_per_class.values()) == 0
    else:
        assert min(result.instances_per_class.values()) > 0


def test_progress_is_reported_after_every_photo(tmp_path):
    calls = []
    generate_dataset(tmp_path / "synth", 3, seed=0, progress=lambda *a: calls.append(a), **SMALL)
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_regenerating_replaces_the_previous_generated_files(tmp_path):
    generate_dataset(tmp_path / "synth", 4, seed=0, **SMALL)
    result = generate_dataset(tmp_path / "synth", 2, seed=1, **SMALL)
    names = sorted(p.name for p in result.images_dir.iterdir())
    assert names == ["panel_00000.jpg", "panel_00001.jpg"]
    coco = json.loads(result.annotations_path.read_text())
    assert [image["file_name"] for image in coco["images"]] == names
    assert coco["info"]["seed"] == 1


def test_a_folder_holding_other_files_is_refused_and_left_alone(tmp_path):
    images = tmp_path / "synth" / "images"
    images.mkdir(parents=True)
    (images / "holiday.jpg").write_bytes(b"someone's photo")
    with pytest.raises(FileExistsError, match="holiday.jpg"):
        generate_dataset(tmp_path / "synth", 2, seed=0, **SMALL)
    assert (images / "holiday.jpg").read_bytes() == b"someone's photo"
    assert not (tmp_path / "synth" / "annotations.json").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_images": 0}, "n_images must be at least 1"),
        ({"seed": -1}, "seed must be a non-negative"),
        ({"clean_share": 1.5}, "clean_share must be between 0 and 1"),
        ({"lighting": "dusk"}, "unknown lighting 'dusk'"),
        ({"width": 64}, "image size 64x160 is outside"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, arguments, message):
    call = {"n_images": 2, "seed": 0, **SMALL, **arguments}
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "synth", **call)
    assert not (tmp_path / "synth").exists()


def test_damaged_and_clean_photos_both_look_like_paint_not_noise(tmp_path):
    """A sanity check on the pixels: smooth panels (low local variation), not random images."""
    result = generate_dataset(tmp_path / "synth", 6, seed=2, **SMALL)
    for path in sorted(result.images_dir.iterdir()):
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        assert np.abs(np.diff(pixels, axis=1)).mean() < 6
