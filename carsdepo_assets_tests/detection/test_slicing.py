"""Sliced prediction at native resolution: tiles cover the photo at full resolution, and a box
cut by a tile border is reported once, in the photo's pixels; the mirrored pass of
``flip_tta`` is merged the same way.

Which boxes a trained Faster R-CNN finds cannot be dictated, so the straddling-box tests run the
real ``TrainedDetector.predict`` path (tiling, reading, mapping back, merging) around a model
that finds one thing for certain: the red pixels of the image it is given, as one box
(``RedPatchDetector``, named for what it is).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from carsdepo_assets.detection.backends import TrainedDetector
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import image_tensor
from carsdepo_assets.detection.slicing import cut_by_tile, merge_detections, tiles
from carsdepo_assets.detection.types import Detection


class RedPatchDetector(TrainedDetector):
    """Finds the red pixels of each (resized) image as one scratch; records what it was shown."""

    backend = "red-patch"

    def __init__(self, config: DetectorConfig):
        super().__init__(torch.nn.Identity(), config)
        self.shown: list[tuple[int, int]] = []

    def _predict_resized(self, images, min_size, max_size):
        results = []
        for image in images:
            tensor, scale = image_tensor(image, min_size, max_size)
            self.shown.append((tensor.shape[2], tensor.shape[1]))
            red = (tensor[0] > 0.8) & (tensor[1] < 0.2)
            rows, columns = np.nonzero(red.numpy())
            if not len(rows):
                results.append([])
                continue
            box = np.array([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]) / scale
            results.append([Detection("scratch", 0.9, tuple(float(v) for v in box))])
        return results

    def _set_output_limits(self, score_floor, max_detections):
        pass

    @classmethod
    def _build_model(cls, config):
        return torch.nn.Identity()


def photo_with_red_box(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    pixels = np.full((height, width, 3), 120, dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = (255, 0, 0)
    return Image.fromarray(pixels)


def test_tiles_of_a_2000x1500_photo_are_read_at_full_resolution():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3),
                                                              dtype=np.uint8))
    config = DetectorConfig(work_side=1280, crop_size=512, tile_overlap=0.25)

    crops = tiles(*photo.size, config)

    assert {crop.scale for crop in crops} == {1.0}  # never shrunk to the work side
    covered = np.zeros((1500, 2000), dtype=bool)
    for crop in crops:
        x1, y1, x2, y2 = (int(v) for v in crop.photo_window)
        assert crop.size == (512, 512) and x2 <= 2000 and y2 <= 1500
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    corner = crops[-1]
    assert np.array_equal(np.asarray(corner.read(photo)),
                          np.asarray(photo.crop(tuple(int(v) for v in corner.photo_window))))


def test_prediction_tiles_take_tile_size_when_set_and_the_crop_size_otherwise():
    trained_on_512 = DetectorConfig(work_side=1280, crop_size=512)

    assert {crop.size for crop in tiles(1280, 1280, trained_on_512)} == {(512, 512)}
    larger = tiles(1280, 1280, trained_on_512.replace(tile_size=768))
    assert {crop.size for crop in larger} == {(768, 768)} and len(larger) == 4


def test_a_small_photo_is_enlarged_to_the_work_side_before_tiling():
    crops = tiles(640, 480, DetectorConfig(work_side=1280, crop_size=512))
    assert {crop.scale for crop in crops} == {2.0}
    assert max(crop.photo_window[2] for crop in crops) == pytest.approx(640)


def test_a_box_straddling_a_tile_border_is_reported_once_in_photo_pixels():
    box = (480, 100, 560, 160)  # across the first tile's right edge at x = 512
    photo = photo_with_red_box(1200, 400, box)
    config = DetectorConfig(work_side=1000, crop_size=512, tile_overlap=0.25, min_size=200,
                            max_size=600)
    detector = RedPatchDetector(config)

    found = detector.predict([photo])[0]

    assert len(found) == 1
    np.testing.assert_allclose(found[0].box, box, atol=2.0)
    assert (512, 400) in detector.shown  # tiles seen at full resolution (the photo is 400 high)
    assert (600, 200) in detector.shown  # and the whole-image pass


def test_without_work_side_only_the_whole_image_pass_runs():
    detector = RedPatchDetector(DetectorConfig(min_size=200, max_size=600))
    found = detector.predict([photo_with_red_box(1200, 400, (480, 100, 560, 160))])[0]
    assert detector.shown == [(600, 200)]
    np.testing.assert_allclose(found[0].box, (480, 100, 560, 160), atol=2.0)


def test_the_mirrored_pass_maps_its_box_back_and_merges_it_with_the_first_pass():
    box = (100, 50, 180, 90)  # off-centre: a box not mirrored back would land at x 1020-1100
    detector = RedPatchDetector(DetectorConfig(min_size=200, max_size=600, flip_tta=True))

    found = detector.predict([photo_with_red_box(1200, 400, box)])[0]

    assert detector.shown == [(600, 200), (600, 200)]  # the photo and its mirror
    assert len(found) == 1
    np.testing.assert_allclose(found[0].box, box, atol=2.0)


def test_the_mirrored_pass_of_a_sliced_prediction_is_merged_with_every_tile():
    box = (480, 100, 560, 160)  # across a tile border in the photo and in its mirror
    config = DetectorConfig(work_side=1000, crop_size=512, tile_overlap=0.25, min_size=200,
                            max_size=600)
    plain, mirrored = RedPatchDetector(config), RedPatchDetector(config.replace(flip_tta=True))
    photo = photo_with_red_box(1200, 400, box)

    found = mirrored.predict([photo])[0]

    assert len(found) == 1
    np.testing.assert_allclose(found[0].box, box, atol=2.0)
    plain.predict([photo])
    assert len(mirrored.shown) == 2 * len(plain.shown)  # whole image and tiles, twice


def test_validation_inside_a_training_takes_the_single_pass_only():
    detector = RedPatchDetector(DetectorConfig(min_size=200, max_size=600, flip_tta=True))
    detector.predict([photo_with_red_box(1200, 400, (100, 50, 180, 90))], single_pass=True)
    assert detector.shown == [(600, 200)]


def test_a_detection_mirrored_twice_is_the_detection_again():
    found = Detection("dent", 0.7, (10.0, 20.0, 30.0, 40.0))
    assert found.mirrored(100).box == (70.0, 20.0, 90.0, 40.0)
    assert found.mirrored(100).mirrored(100) == found


def test_merging_keeps_separate_objects_and_classes_apart():
    detections = [
        Detection("scratch", 0.9, (0, 0, 10, 10)),
        Detection("scratch", 0.5, (2, 0, 10, 10)),  # IoU 0.8 with the first: one object
        Detection("scratch", 0.8, (50, 50, 60, 60)),  # elsewhere
        Detection("dent", 0.7, (0, 0, 10, 10)),  # same place, other class
    ]

    merged = merge_detections(detections, iou=0.5)

    assert [(d.label, d.score, d.box) for d in merged] == [
        ("scratch", 0.9, (0.0, 0.0, 10.0, 10.0)),
        ("scratch", 0.8, (50.0, 50.0, 60.0, 60.0)),
        ("dent", 0.7, (0.0, 0.0, 10.0, 10.0)),
    ]


def test_merging_keeps_a_small_scratch_inside_a_large_weak_box_as_it_was_found():
    # at the COCO protocol's score floor a photo has many weak boxes; growing boxes into their
    # neighbours' union would turn the small confident scratch into the large weak box
    detections = [Detection("scratch", 0.9, (100, 100, 110, 130)),
                  Detection("scratch", 0.01, (0, 0, 400, 300))]

    merged = merge_detections(detections, iou=0.5)

    assert [d.box for d in merged] == [(100, 100, 110, 130), (0, 0, 400, 300)]


def test_a_piece_cut_by_an_inner_tile_border_is_dropped_but_the_photo_edge_is_not_a_cut():
    config = DetectorConfig(work_side=1000, crop_size=512, tile_overlap=0.25)
    first, second = tiles(1200, 400, config)[:2]  # x from 0 and from 384, full height

    assert cut_by_tile((480, 100, 512, 160), first, (1200, 400))  # at its inner right border
    assert not cut_by_tile((0, 100, 40, 160), first, (1200, 400))  # at the photo's left edge
    assert not cut_by_tile((96, 0, 176, 60), second, (1200, 400))  # at the photo's top edge
    assert cut_by_tile((0, 100, 40, 160), second, (1200, 400))  # at its inner left border
