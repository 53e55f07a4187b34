"""Operating points chosen on val: the precision-recall curve of one class, the choice for a
stated precision (or the best F1 where none reaches it), and the score mapping that puts each
class's choice on the one operating threshold."""

from __future__ import annotations

import pytest

from carsdepo_assets.detection.backends import fine_tuning_config
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.operating_point import (
    calibrated,
    calibrated_score,
    choose_operating_points,
    precision_recall_curve,
)
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, coco_categories

BOX_A, BOX_B, ELSEWHERE = (0, 0, 10, 10), (20, 20, 30, 30), (50, 50, 60, 60)


def coco(boxes: dict[int, list[tuple[str, tuple]]]) -> dict:
    annotations = [{"id": n, "image_id": image_id, "category_id": CATEGORY_ID_BY_NAME[label],
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0,
                    "area": (box[2] - box[0]) * (box[3] - box[1])}
                   for n, (image_id, label, box) in enumerate(
                       (image_id, label, box) for image_id, found in boxes.items()
                       for label, box in found)]
    return {"images": [{"id": image_id, "width": 100, "height": 100} for image_id in boxes],
            "annotations": annotations, "categories": coco_categories()}


def test_the_curve_gives_precision_and_recall_at_each_score_taken_as_threshold():
    truths = {1: [BOX_A, BOX_B], 2: [BOX_A]}
    detections = {1: [Detection("scratch", 0.9, BOX_A), Detection("scratch", 0.4, ELSEWHERE)],
                  2: [Detection("scratch", 0.7, BOX_A), Detection("scratch", 0.2, BOX_A)]}

    curve = precision_recall_curve(truths, detections)

    # 0.9 hit, 0.7 hit, 0.4 a false box, 0.2 a second box on a truth already found
    assert curve == [(0.9, 1.0, 1 / 3), (0.7, 1.0, 2 / 3), (0.4, 2 / 3, 2 / 3),
                     (0.2, 0.5, 2 / 3)]


def test_detections_sharing_a_score_are_one_point_of_the_curve():
    curve = precision_recall_curve({1: [BOX_A]}, {1: [Detection("dent", 0.5, BOX_A),
                                                      Detection("dent", 0.5, ELSEWHERE)]})
    assert curve == [(0.5, 0.5, 1.0)]


def test_each_class_operates_at_the_score_with_the_most_recall_at_the_stated_precision():
    gt = coco({1: [("scratch", BOX_A), ("scratch", BOX_B), ("dent", BOX_A)],
               2: [("scratch", BOX_A)]})
    predictions = {
        1: [Detection("scratch", 0.9, BOX_A), Detection("scratch", 0.6, ELSEWHERE),
            Detection("scratch", 0.3, BOX_B), Detection("dent", 0.2, BOX_A)],
        2: [Detection("scratch", 0.5, BOX_A), Detection("scratch", 0.1, ELSEWHERE)],
    }

    points = choose_operating_points(gt, predictions, target_precision=0.7)

    scratch = points["scratch"]  # 0.3: all three found, 3 of 4 right; 0.1 would be 3 of 5
    assert (scratch.raw_threshold, scratch.precision, scratch.recall) == (0.3, 0.75, 1.0)
    assert scratch.reached and scratch.val_boxes == 3
    assert (points["dent"].raw_threshold, points["dent"].recall) == (0.2, 1.0)


def test_a_class_that_never_reaches_the_precision_takes_its_best_f1_and_says_so():
    gt = coco({1: [("dent", BOX_A)], 2: [("dent", BOX_B)]})
    predictions = {1: [Detection("dent", 0.8, ELSEWHERE), Detection("dent", 0.6, BOX_A)],
                   2: [Detection("dent", 0.4, ELSEWHERE), Detection("dent", 0.3, BOX_B)]}

    dent = choose_operating_points(gt, predictions, target_precision=0.9)["dent"]

    assert not dent.reached
    assert (dent.raw_threshold, dent.precision, dent.recall) == (0.3, 0.5, 1.0)  # F1 2/3


def test_a_class_without_validation_boxes_keeps_its_raw_scores():
    gt = coco({1: [("scratch", BOX_A)]})
    predictions = {1: [Detection("scratch", 0.8, BOX_A), Detection("dent", 0.9, BOX_B)]}

    points = choose_operating_points(gt, predictions, target_precision=0.5)

    assert set(points) == {"scratch"}
    found = calibrated(predictions[1], {"scratch": 0.8}, operating=0.5)
    assert found == [Detection("scratch", 0.5, BOX_A), Detection("dent", 0.9, BOX_B)]


@pytest.mark.parametrize("raw_threshold", [0.05, 0.3, 0.5, 0.8])
def test_calibration_puts_the_chosen_score_on_the_operating_threshold_and_keeps_the_order(
        raw_threshold):
    raws = [0.0, 0.01, 0.1, 0.29, 0.3, 0.31, 0.5, 0.79, 0.8, 0.9, 0.99, 1.0]
    mapped = [calibrated_score(raw, raw_threshold, operating=0.5) for raw in raws]

    assert calibrated_score(raw_threshold, raw_threshold, 0.5) == pytest.approx(0.5)
    assert mapped == sorted(mapped) and len(set(mapped)) == len(mapped)
    assert mapped[0] == 0.0 and mapped[-1] == pytest.approx(1.0)
    assert all((m >= 0.5 - 1e-12) == (raw >= raw_threshold) for raw, m in zip(raws, mapped,
                                                                              strict=True))


def test_a_calibration_outside_zero_to_one_is_refused_by_name():
    with pytest.raises(ConfigError, match="scratch's raw threshold"):
        DetectorConfig(score_calibration=(("scratch", 1.5),))
    with pytest.raises(ConfigError, match="operating_precision"):
        DetectorConfig(operating_precision=2.0)


def test_the_calibration_survives_json_and_compares_equal():
    config = DetectorConfig(operating_precision=0.5,
                            score_calibration=(("scratch", 0.3), ("dent", 0.2)))
    assert DetectorConfig.from_dict(config.to_dict()) == config


def test_fine_tuning_drops_the_starting_models_calibration_for_its_own_choice():
    start = DetectorConfig(score_calibration=(("scratch", 0.3),), operating_precision=0.5)

    child = fine_tuning_config(DetectorConfig(operating_precision=0.6), start)

    assert child.score_calibration == () and child.operating_precision == 0.6
