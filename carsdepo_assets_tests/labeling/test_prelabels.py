"""Pre-annotations from detections, and the confidence that orders tasks (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carsdepo_assets.detection.types import Detection
from carsdepo_assets.labeling.prelabels import (
    ImageToLabel,
    Prelabels,
    image_confidence,
    task_predictions,
)
from carsdepo_assets.labeling.results import rectangle_to_box


def test_the_least_certain_detection_sets_the_image_confidence():
    sure = Detection("dent", 0.95, (0, 0, 5, 5))
    unsure = Detection("scratch", 0.55, (0, 0, 5, 5))
    assert image_confidence([sure, unsure]) == pytest.approx(0.1)
    assert image_confidence([sure]) == pytest.approx(0.9)
    assert image_confidence([]) == 1.0


def test_detections_become_scored_rectangles_and_none_becomes_no_damage():
    images = [ImageToLabel("a" * 64, Path("a.jpg"), 200, 100),
              ImageToLabel("b" * 64, Path("b.jpg"), 200, 100),
              ImageToLabel("c" * 64, Path("c.jpg"), 200, 100)]
    prelabels = Prelabels("7", {"a" * 64: [Detection("dent", 0.8, (20, 10, 60, 50))],
                                "b" * 64: []})
    damaged, clean = task_predictions(prelabels, images, {"a" * 64: 1, "b" * 64: 2,
                                                          "c" * 64: 3})
    assert (damaged.task_id, clean.task_id) == (1, 2)  # c has no model answer: no prediction
    box, *_ = rectangle_to_box(damaged.result[0]["value"], 200, 100)
    assert box.bbox == pytest.approx((20, 10, 40, 40)) and damaged.result[0]["score"] == 0.8
    assert clean.result[0]["value"] == {"choices": ["no damage"]} and clean.score == 1.0
