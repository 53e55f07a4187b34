"""Bootstrap bounds of the test-split figures, checked against pycocotools on fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from carsdepo_assets.detection.bootstrap import _match_class, _mean_ap50, bootstrap_bounds
from carsdepo_assets.detection.metrics import evaluate_detections
from carsdepo_assets.taxonomy import CLASS_NAME_BY_ID, CLASS_NAMES
from carsdepo_assets_tests.detection.test_metrics import coco, det

THRESHOLD = 0.5


def mixed_split(images: int, seed: int = 3) -> tuple[dict, dict]:
    """A split where a detector finds most boxes, misses some, adds false alarms, and mixes
    scores, so that AP50 lies well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    truth, predictions = {}, {}
    for image_id in range(1, images + 1):
        boxes = []
        if rng.random() < 0.7:
            x, y = rng.uniform(0, 250), rng.uniform(0, 200)
            boxes.append((str(rng.choice(CLASS_NAMES)), (x, y, x + 60.0, y + 40.0)))
        truth[image_id] = boxes
        found = [det(label, box, float(rng.uniform(0.3, 1.0)))
                 for label, box in boxes if rng.random() < 0.8]
        if rng.random() < 0.3:
            found.append(det(str(rng.choice(CLASS_NAMES)), (300.0, 200.0, 380.0, 280.0),
                             float(rng.uniform(0.05, 0.9))))
        predictions[image_id] = found
    return coco(truth), predictions


def test_estimates_equal_pycocotools_ap50_and_the_none_accuracy():
    gt, predictions = mixed_split(60)

    bounds = bootstrap_bounds(gt, predictions, THRESHOLD, resamples=50)
    reference = evaluate_detections(gt, predictions, THRESHOLD)

    assert 0.2 < reference.coco["AP50"] < 0.95
    assert bounds["AP50"].estimate == pytest.approx(reference.coco["AP50"], abs=1e-9)
    assert bounds["none_accuracy"].estimate == pytest.approx(reference.none_accuracy)


def test_reweighting_images_equals_copying_them_in_the_split():
    gt, predictions = mixed_split(12)
    copies = [2, 0, 1, 3, 0, 1, 1, 0, 2, 1, 0, 1]
    copied_truth, copied_predictions, next_id = {}, {}, 1
    by_image = {image["id"]: [] for image in gt["images"]}
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image[ann["image_id"]].append(
            (CLASS_NAME_BY_ID[ann["category_id"]], (x, y, x + w, y + h)))
    for image_id, times in zip(by_image, copies, strict=True):
        for _ in range(times):
            copied_truth[next_id] = by_image[image_id]
            copied_predictions[next_id] = predictions[image_id]
            next_id += 1
    image_ids = [image["id"] for image in gt["images"]]
    truths = {image_id: by_image[image_id] for image_id in image_ids}
    matches = [_match_class(name, image_ids, truths, predictions) for name in CLASS_NAMES]

    weighted = _mean_ap50(matches, np.array([copies], dtype=float))[0]
    reference = evaluate_detections(coco(copied_truth), copied_predictions, THRESHOLD)

    assert weighted == pytest.approx(reference.coco["AP50"], abs=1e-9)


def test_lower_bound_lies_below_the_estimate_and_tightens_with_more_test_images():
    small_gt, small_predictions = mixed_split(20)
    large_gt, large_predictions = mixed_split(200)

    small = bootstrap_bounds(small_gt, small_predictions, THRESHOLD)["AP50"]
    large = bootstrap_bounds(large_gt, large_predictions, THRESHOLD)["AP50"]

    assert small.lower < small.estimate
    assert large.lower < large.estimate
    assert large.estimate - large.lower < small.estimate - small.lower
    assert (small.confidence, small.resamples) == (0.95, 1000)


def test_same_predictions_and_seed_give_the_same_bounds():
    gt, predictions = mixed_split(40)

    first = bootstrap_bounds(gt, predictions, THRESHOLD, seed=11)
    second = bootstrap_bounds(gt, predictions, THRESHOLD, seed=11)

    assert first == second


def test_perfect_predictions_have_a_lower_bound_of_one():
    gt = coco({1: [("scratch", (10.0, 10.0, 110.0, 40.0))], 2: [("dent", (50.0, 50.0, 150.0,
                                                                          150.0))], 3: []})
    predictions = {1: [det("scratch", (10.0, 10.0, 110.0, 40.0))],
                   2: [det("dent", (50.0, 50.0, 150.0, 150.0))]}

    bounds = bootstrap_bounds(gt, predictions, THRESHOLD)

    assert bounds["AP50"].lower == pytest.approx(1.0)
    assert bounds["none_accuracy"].lower == pytest.approx(1.0)


def test_empty_split_and_bad_confidence_are_refused_by_name():
    with pytest.raises(ValueError, match="no images"):
        bootstrap_bounds(coco({}), {}, THRESHOLD)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_bounds(coco({1: []}), {}, THRESHOLD, confidence=1.0)
