"""Copy-paste augmentation on real image files: instances are cut with their blend margin,
pasted only where no box is, sized at the sample's scale, labelled with their class, drawn
class-balanced, and blended in without a hard edge."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.copy_paste import (
    MARGIN_SHARE,
    DamageBank,
    DamageInstance,
    _feathered_mask,
    cut_patch,
    paste_damage,
)
from carsdepo_assets.detection.data import ImageRecord, Pasting, crop_sample

RED, GREY = (220, 30, 30), 0.5
SCRATCH, DENT = 1, 2


def red_square_photo(path: Path, box: tuple[int, int, int, int]) -> Path:
    """A white 640x640 photo with a red square at ``box``."""
    image = Image.new("RGB", (640, 640), (255, 255, 255))
    image.paste(RED, box)
    image.save(path)
    return path


def record(path: Path, boxes: list, labels: list) -> ImageRecord:
    return ImageRecord(1, path, 640, 640, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                       np.array(labels, dtype=np.int64))


@pytest.fixture
def red_bank(tmp_path) -> DamageBank:
    """One 40x40 red scratch in a white photo."""
    photo = red_square_photo(tmp_path / "source.png", (300, 300, 340, 340))
    return DamageBank([record(photo, [[300, 300, 340, 340]], [SCRATCH])])


def test_a_cut_patch_is_the_box_and_its_margin_with_the_box_located_inside_it(tmp_path):
    photo = red_square_photo(tmp_path / "p.png", (100, 200, 150, 220))

    patch = cut_patch(DamageInstance(photo, (100.0, 200.0, 150.0, 220.0), DENT))

    x1, y1, x2, y2 = patch.box
    assert (x2 - x1, y2 - y1) == (50, 20) and patch.label == DENT
    assert x1 == pytest.approx(MARGIN_SHARE * 50, abs=1) and y1 == pytest.approx(4, abs=1)
    assert patch.pixels.shape[:2] == (round(20 + 2 * y1), round(50 + 2 * x1))
    inside = patch.pixels[int(y1):int(y2), int(x1):int(x2)]
    assert (inside == RED).all() and (patch.pixels[0, 0] == 255).all()


def test_a_cut_patch_stops_at_the_photo_edge(tmp_path):
    photo = red_square_photo(tmp_path / "p.png", (0, 0, 30, 30))
    patch = cut_patch(DamageInstance(photo, (0.0, 0.0, 30.0, 30.0), SCRATCH))
    assert patch.box == (0.0, 0.0, 30.0, 30.0) and patch.pixels.shape[:2] == (36, 36)


@pytest.mark.parametrize("seed", range(10))
def test_pasted_instances_avoid_existing_boxes_and_are_labelled_and_visible(red_bank, seed):
    grey = torch.full((3, 256, 256), GREY)
    existing = torch.tensor([[0.0, 0.0, 128.0, 256.0]])  # the left half is damage already

    image, boxes, labels = paste_damage(grey, existing, torch.tensor([DENT]), 1.0, red_bank,
                                        3, np.random.default_rng(seed))

    assert torch.equal(boxes[0], existing[0]) and labels[0] == DENT
    pasted = boxes[1:]
    assert (labels[1:] == SCRATCH).all()
    for x1, y1, x2, y2 in pasted.tolist():
        assert x1 >= 128 and 0 <= y1 and x2 <= 256 and y2 <= 256  # in the free half
        assert 40 * 0.75 - 1 <= x2 - x1 <= 40 * 1.25 + 1  # its size at scale 1, jittered
        centre = image[:, round((y1 + y2) / 2), round((x1 + x2) / 2)]
        assert centre[0] > centre[1] + 0.2  # red shows through (colour-matched towards grey)
    for i, a in enumerate(pasted.tolist()):
        for b in pasted.tolist()[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert torch.equal(image[:, :, :128], grey[:, :, :128])  # what was there is untouched


@pytest.mark.parametrize("seed", range(10))
def test_the_label_covers_the_pasted_damage_when_mirrored_with_a_one_sided_margin(tmp_path,
                                                                                  seed):
    photo = red_square_photo(tmp_path / "edge.png", (0, 0, 30, 20))  # margin right/below only
    bank = DamageBank([record(photo, [[0, 0, 30, 20]], [SCRATCH])])

    image, boxes, _ = paste_damage(torch.full((3, 128, 128), GREY), torch.zeros((0, 4)),
                                   torch.zeros(0, dtype=torch.int64), 1.0, bank, 1,
                                   np.random.default_rng(seed))

    for x1, y1, x2, y2 in boxes.tolist():
        for x, y in ((x1 + 2, y1 + 2), (x2 - 3, y1 + 2), (x1 + 2, y2 - 3), (x2 - 3, y2 - 3)):
            pixel = image[:, int(y), int(x)]
            assert pixel[0] > pixel[1] + 0.2, (x, y)  # every corner of the label is red
        outside = image[:, int(y1) + 5, max(0, int(x1) - 2)] if x1 >= 2 else None
        assert outside is None or outside[0] < outside[1] + 0.2  # left of it is not


def test_instances_are_sized_at_the_samples_scale(red_bank):
    for seed in range(5):
        _, boxes, _ = paste_damage(torch.full((3, 512, 512), GREY), torch.zeros((0, 4)),
                                   torch.zeros(0, dtype=torch.int64), 2.0, red_bank, 1,
                                   np.random.default_rng(seed))
        for x1, _, x2, _ in boxes.tolist():
            assert 80 * 0.75 - 1 <= x2 - x1 <= 80 * 1.25 + 1


def test_nothing_is_pasted_where_there_is_no_room(red_bank):
    full = torch.tensor([[0.0, 0.0, 256.0, 256.0]])
    labels = torch.tensor([DENT])
    for seed in range(5):
        image, boxes, out_labels = paste_damage(torch.full((3, 256, 256), GREY), full, labels,
                                                1.0, red_bank, 3, np.random.default_rng(seed))
        assert torch.equal(boxes, full) and torch.equal(out_labels, labels)
        assert (image == GREY).all()


def test_classes_are_drawn_alike_however_rare_one_is(tmp_path):
    photo = red_square_photo(tmp_path / "p.png", (10, 10, 20, 20))
    records = [record(photo, [[10, 10, 20, 20]] * 9 + [[30, 30, 40, 40]], [SCRATCH] * 9 + [DENT])]
    bank = DamageBank(records)
    rng = np.random.default_rng(0)

    drawn = Counter(bank.draw(rng).label for _ in range(400))

    assert len(bank) == 10
    assert 160 <= drawn[DENT] <= 240  # 1 instance in 10, drawn half the time


def test_the_blend_mask_is_opaque_over_the_box_and_fades_to_the_patch_edge():
    mask = _feathered_mask((40, 20), (10.0, 5.0, 30.0, 15.0))[0]
    assert mask.shape == (20, 40)
    assert (mask[5:15, 10:30] == 1).all()
    assert mask[0, 0] < 0.1 and mask[10, 0] < 0.1 and mask[0, 20] < 0.2
    assert mask[10, 5] == pytest.approx(0.55, abs=0.01)  # halfway up the ramp


def test_a_crop_sample_with_pasting_holds_its_own_and_the_pasted_boxes(red_bank, tmp_path):
    target = red_square_photo(tmp_path / "target.png", (600, 600, 610, 610))
    photo = record(target, [[600, 600, 610, 610]], [DENT])
    config = DetectorConfig(work_side=1280, crop_size=256, background_crops=0.0)
    counts = []
    for seed in range(10):
        _, sample = crop_sample(photo, config, None, np.random.default_rng(seed),
                                Pasting(red_bank, 2))
        assert sample["labels"][0] == DENT and (sample["labels"][1:] == SCRATCH).all()
        counts.append(len(sample["labels"]) - 1)
    assert set(counts) <= {0, 1, 2} and max(counts) >= 1


def test_copy_paste_must_not_be_negative():
    with pytest.raises(ConfigError, match="copy_paste"):
        DetectorConfig(copy_paste=-1)
