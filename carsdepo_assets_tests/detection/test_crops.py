"""Native-resolution training samples: damage-centred crops hold their box, boxes are clipped or
dropped at the crop's edges, the zoom maps coordinates back exactly, and rare classes are
repeated as LVIS repeats them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import (
    LARGE_BOX_FILL,
    Crop,
    ImageRecord,
    boxes_in_crop,
    crop_sample,
    damage_crop,
    random_crop,
    repeat_factors,
    working_scale,
)
from carsdepo_assets.detection.training import _batch_indices

NATIVE = DetectorConfig(work_side=1280, crop_size=256)


def record(path: Path, width: int, height: int, boxes: list, labels: list | None = None
           ) -> ImageRecord:
    return ImageRecord(1, path, width, height, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                       np.array(labels or [1] * len(boxes), dtype=np.int64))


def test_working_scale_enlarges_small_photos_and_never_shrinks_large_ones():
    assert working_scale(640, 640, 1280) == 2.0
    assert working_scale(2000, 1500, 1280) == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_a_damage_centred_crop_contains_its_box(seed, tmp_path):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 600, 2)
    box = [x, y, min(640, x + rng.uniform(3, 60)), min(640, y + rng.uniform(3, 60))]
    photo = record(tmp_path / "p.jpg", 640, 640, [box])

    crop = damage_crop(photo, 0, NATIVE, rng)

    x1, y1, x2, y2 = crop.photo_window
    assert crop.scale == 2.0 and crop.size == (256, 256)
    assert x1 <= box[0] and y1 <= box[1] and box[2] <= x2 and box[3] <= y2
    assert 0 <= x1 and 0 <= y1 and x2 <= 640 + 1e-6 and y2 <= 640 + 1e-6


def test_a_box_too_large_for_the_crop_is_read_at_a_smaller_scale_with_context(tmp_path):
    photo = record(tmp_path / "p.jpg", 640, 640, [[100, 100, 500, 400]])  # a 400 px dent

    crop = damage_crop(photo, 0, NATIVE, np.random.default_rng(0))

    assert crop.scale == pytest.approx(LARGE_BOX_FILL * 256 / 400)
    inside = crop.to_crop(photo.boxes)[0]
    assert inside[0] >= 0 and inside[2] <= 256 and inside[2] - inside[0] <= 0.6 * 256 + 1e-6


def test_boxes_are_clipped_at_the_crop_edge_and_dropped_when_mostly_outside():
    crop = Crop(scale=2.0, origin=(100.0, 100.0), size=(200, 200))  # photo window 50..150
    boxes = np.array([
        [60, 60, 80, 80],  # inside: crop 20..60
        [140, 60, 160, 80],  # half outside on the right: kept, clipped to the edge
        [40, 60, 54, 80],  # 4 of 14 px inside (29 %): dropped
        [149.5, 90, 170, 130],  # a 1 px sliver inside: dropped
    ], dtype=np.float32)

    kept, labels = boxes_in_crop(crop, boxes, np.array([1, 2, 1, 2]))

    np.testing.assert_allclose(kept, [[20, 20, 60, 60], [180, 20, 200, 60]])
    assert labels.tolist() == [1, 2]


def test_the_zoom_maps_boxes_and_pixels_back_to_the_photo_exactly(tmp_path):
    crop = Crop(scale=2.0, origin=(37.0, 11.0), size=(64, 48))
    boxes = np.array([[30.25, 10.5, 40.75, 20.0], [0, 0, 1, 1]])
    np.testing.assert_allclose(crop.to_photo(crop.to_crop(boxes)), boxes)

    pixels = np.zeros((60, 80, 3), dtype=np.uint8)
    pixels[20:30, 30:40] = (255, 0, 0)  # a red square at x 30..40, y 20..30
    read = np.asarray(crop.read(Image.fromarray(pixels)))
    red = np.argwhere(read[:, :, 0] > 200)
    (top, left), (bottom, right) = red.min(axis=0), red.max(axis=0) + 1
    mapped = crop.to_photo(np.array([[left, top, right, bottom]]))[0]
    np.testing.assert_allclose(mapped, [30, 20, 40, 30], atol=0.5)  # within a scaled pixel


def test_a_crop_sample_reads_the_photo_at_the_working_scale(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), (90, 100, 110)).save(path)
    photo = record(path, 640, 480, [[300, 200, 330, 212]], [1])
    config = NATIVE.replace(background_crops=0.0)

    tensor, target = crop_sample(photo, config, None, np.random.default_rng(1))

    assert tuple(tensor.shape) == (3, 256, 256)
    (x1, y1, x2, y2), = target["boxes"].tolist()
    assert (x2 - x1, y2 - y1) == pytest.approx((60, 24))  # 2x the photo's 30 x 12
    assert target["labels"].tolist() == [1]


def test_a_photo_smaller_than_the_crop_gives_a_crop_of_its_own_size(tmp_path):
    photo = record(tmp_path / "p.jpg", 100, 80, [])

    crop = random_crop(photo, NATIVE.replace(work_side=0), np.random.default_rng(0))

    assert crop.size == (100, 80) and crop.origin == (0.0, 0.0)


def test_repeat_factors_follow_lvis(tmp_path):
    scratch_only = [record(tmp_path / f"{i}.jpg", 10, 10, [[0, 0, 1, 1]], [1]) for i in range(9)]
    with_dent = record(tmp_path / "d.jpg", 10, 10, [[0, 0, 1, 1], [2, 2, 3, 3]], [1, 2])
    clean = record(tmp_path / "c.jpg", 10, 10, [])
    records = [*scratch_only, with_dent, clean]

    factors = repeat_factors(records, threshold=0.5)

    # scratch in 10 of 11 images: r = 1; dent in 1 of 11: r = sqrt(0.5 / (1 / 11)) = 2.345
    assert factors[:9].tolist() == [1.0] * 9 and factors[10] == 1.0
    assert factors[9] == pytest.approx(np.sqrt(0.5 * 11))
    assert (repeat_factors(records, 0.0) == 1).all()


def test_repeated_images_are_seen_about_their_factor_times_per_epoch():
    rng = np.random.default_rng(0)
    batches = _batch_indices(np.array([1.0, 1.0, 2.5]), 1, rng)
    seen = [next(batches)[0] for _ in range(4500)]  # 1000 epochs of 4.5 images
    assert seen.count(2) / seen.count(0) == pytest.approx(2.5, rel=0.05)


def test_without_repeat_factors_batches_are_one_permutation_per_epoch():
    batches = _batch_indices(np.ones(5), 5, np.random.default_rng(3))
    assert sorted(next(batches)) == [0, 1, 2, 3, 4]
    assert sorted(next(batches)) == [0, 1, 2, 3, 4]
