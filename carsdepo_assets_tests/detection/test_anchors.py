"""Anchors learned from boxes: coverage worked out on paper, learned sets never worse than the
configured ones, several sizes per level in the torchvision model, old configs still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from carsdepo_assets.detection.anchors import (
    ANCHOR_STRIDES,
    anchor_coverage,
    best_anchor_iou,
    coverage_for,
    learn_anchors,
    level_for_size,
    mean_coverage,
    with_learned_anchors,
)
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.torchvision_backend import build_model

SEVERAL = ((12, 20), (40, 56), (90, 120), (250, 400))


def boxes_at(centres: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    return np.concatenate([centres - shapes / 2, centres + shapes / 2], axis=1)


def damage_like(seed: int, scratches: int = 400, dents: int = 80) -> dict[str, np.ndarray]:
    """Thin scratches of 4-40 px and dents of 40-300 px, anywhere in a 1280 px image."""
    rng = np.random.default_rng(seed)
    long_side = rng.uniform(8, 40, scratches)
    short_side = long_side * rng.uniform(0.15, 0.6, scratches)
    flip = rng.random(scratches) < 0.5
    scratch_shapes = np.stack([np.where(flip, long_side, short_side),
                               np.where(flip, short_side, long_side)], axis=1)
    dent_shapes = rng.uniform(40, 300, (dents, 1)) * rng.uniform(0.6, 1.6, (dents, 2))
    return {
        "scratch": boxes_at(rng.uniform(50, 1200, (scratches, 2)), scratch_shapes),
        "dent": boxes_at(rng.uniform(200, 1000, (dents, 2)), dent_shapes),
    }


def test_a_box_equal_to_an_anchor_on_the_grid_has_iou_one_and_half_a_stride_off_less():
    on_grid = np.array([[16.0 - 8, 16.0 - 8, 16.0 + 8, 16.0 + 8]])  # 16 px square at (16, 16)
    assert best_anchor_iou(on_grid, ((16,),), (1.0,), (8,)) == pytest.approx([1.0])
    # centred between grid points of stride 64: the nearest anchor is 16 px off in x and y
    between = np.array([[48.0 - 8, 48.0 - 8, 48.0 + 8, 48.0 + 8]])
    assert best_anchor_iou(between, ((16,),), (1.0,), (64,)) == pytest.approx([0.0])
    # 4 px off on a stride-8 grid, 16 px anchor: overlap 12 x 12 over 2 * 256 - 144
    off = np.array([[12.0 - 8, 12.0 - 8, 12.0 + 8, 12.0 + 8]])
    assert best_anchor_iou(off, ((16,),), (1.0,), (8,)) == pytest.approx([144 / 368])


def test_coverage_counts_shares_per_class_at_iou_half_and_at_the_positive_threshold():
    boxes = {"scratch": np.array([[8.0, 8.0, 24.0, 24.0], [10.0, 10.0, 26.0, 26.0]]),
             "dent": np.zeros((0, 4))}

    coverage = anchor_coverage(boxes, ((16,),), (1.0,), positive_iou=0.7, strides=(8,))

    # IoU 1 (on a grid point), and 14 * 14 / (2 * 256 - 196) = 0.62 (2 px off)
    assert coverage["scratch"] == {"boxes": 2, "iou50": 1.0, "positive": 0.5}
    assert coverage["dent"] == {"boxes": 0, "iou50": None, "positive": None}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("positive_iou", [0.7, 0.5])
def test_learned_anchors_never_cover_less_than_the_configured_ones(seed, positive_iou):
    boxes = damage_like(seed)
    configured = DetectorConfig(anchor_sizes=((16,), (32,), (96,), (256,)), learn_anchors=True,
                                rpn_fg_iou_thresh=positive_iou, rpn_bg_iou_thresh=0.3)

    chosen = with_learned_anchors(configured, boxes)

    assert mean_coverage(coverage_for(chosen, boxes)) >= \
        mean_coverage(coverage_for(configured, boxes))


def test_too_few_boxes_to_learn_every_aspect_ratio_keep_the_configured_anchors():
    configured = DetectorConfig(learn_anchors=True, anchor_ratio_count=5)
    boxes = {"scratch": np.array([[10, 10, 60, 20], [5, 30, 40, 38]], dtype=float),
             "dent": np.array([[50, 50, 90, 92]], dtype=float)}

    assert with_learned_anchors(configured, boxes) == configured


def test_learned_anchors_cover_thin_small_scratches_better_than_one_size_per_level():
    train, test = damage_like(seed=10), damage_like(seed=11)
    configured = DetectorConfig(anchor_sizes=((16,), (32,), (96,), (256,)), learn_anchors=True,
                                anchor_sizes_per_level=2, anchor_ratio_count=5)

    learned = with_learned_anchors(configured, train)

    assert learned.anchor_sizes != configured.anchor_sizes
    assert all(len(level) == 2 for level in learned.anchor_sizes)
    before, after = coverage_for(configured, test), coverage_for(learned, test)
    assert after["scratch"]["iou50"] > before["scratch"]["iou50"]
    assert mean_coverage(after) > mean_coverage(before)  # on boxes it never saw


def test_learned_sizes_sit_on_the_level_of_their_size_band():
    sizes, ratios = learn_anchors(damage_like(seed=4), sizes_per_level=2, ratio_count=3,
                                  positive_iou=0.7)

    assert len(sizes) == len(ANCHOR_STRIDES) and len(ratios) == 3
    assert ratios == tuple(sorted(ratios)) and ratios[0] < 1 < ratios[-1]  # tall and wide
    for level, level_sizes in enumerate(sizes):
        assert len(set(level_sizes)) == 2
        assert all(level_for_size(size) == level for size in level_sizes)


def test_a_config_with_one_int_per_level_still_loads_as_one_size_per_level():
    saved = {"anchor_sizes": [16, 32, 96, 256]}  # what detector.json held before

    config = DetectorConfig.from_dict(saved)

    assert config.anchor_sizes == ((16,), (32,), (96,), (256,))
    assert DetectorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_levels_with_different_numbers_of_sizes_are_rejected():
    with pytest.raises(ConfigError, match="as many sizes"):
        DetectorConfig(anchor_sizes=((16, 24), (32,), (64,), (128,)))


def test_torchvision_model_builds_and_runs_with_several_sizes_per_level():
    config = DetectorConfig(anchor_sizes=SEVERAL, aspect_ratios=(0.3, 1.0, 3.0), pretrained=False,
                            backbone="resnet_tiny", norm="gn", min_size=128, max_size=160,
                            rpn_fg_iou_thresh=0.5, rpn_bg_iou_thresh=0.3)

    model = build_model(config).eval()

    assert model.rpn.anchor_generator.num_anchors_per_location() == [6] * 4
    assert model.rpn.proposal_matcher.high_threshold == 0.5
    with torch.inference_mode():
        output = model([torch.rand(3, 128, 160)])[0]
    assert output["boxes"].shape[1] == 4
