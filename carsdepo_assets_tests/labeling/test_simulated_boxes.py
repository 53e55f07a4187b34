"""The simulated annotator's imperfections, without a server."""

from __future__ import annotations

from carsdepo_assets.labeling.simulated import AnnotatorProfile, imperfect_boxes
from carsdepo_assets.labeling.snapshot import LabeledBox

TRUTH = [LabeledBox("scratch", (10.0, 20.0, 40.0, 3.0)),
         LabeledBox("dent", (150.0, 0.0, 50.0, 30.0))]
W, H = 200, 100


def draw(profile: AnnotatorProfile, sha: str = "f" * 64) -> list[LabeledBox]:
    return imperfect_boxes(TRUTH, W, H, profile, profile.rng(sha))


def test_same_seed_and_image_give_the_same_boxes_another_image_other_boxes():
    profile = AnnotatorProfile(jitter_px=2.0, seed=3)
    assert draw(profile) == draw(profile)
    assert draw(profile) != draw(profile, sha="e" * 64)


def edges(box: LabeledBox) -> tuple[float, float, float, float]:
    x, y, w, h = box.bbox
    return x, y, x + w, y + h


def test_jittered_boxes_stay_near_the_truth_and_inside_the_image():
    profile_jitter = 2.0
    for seed in range(50):
        profile = AnnotatorProfile(jitter_px=profile_jitter, miss_rate=0, seed=seed)
        for drawn, truth in zip(draw(profile), TRUTH, strict=True):
            x1, y1, x2, y2 = edges(drawn)
            assert drawn.label == truth.label
            assert 0 <= x1 and 0 <= y1 and x2 <= W and y2 <= H and x2 - x1 >= 1 and y2 - y1 >= 1
            assert all(abs(a - b) < 5 * profile_jitter
                       for a, b in zip(edges(drawn), edges(truth), strict=True))


def test_a_careful_annotator_draws_the_truth_and_a_blind_one_misses_everything():
    assert draw(AnnotatorProfile(jitter_px=0, miss_rate=0)) == TRUTH
    assert draw(AnnotatorProfile(miss_rate=1.0)) == []
