"""Evaluation metrics checked on hand-made cases whose answers can be worked out on paper, and
the COCO protocol checked against pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from carsdepo_assets.detection.metrics import (
    BoxOutcomes,
    box_iou,
    evaluate_detections,
)
from carsdepo_assets.detection.report import (
    comparison_markdown,
    confusion_matrix_png,
    pr_curves_png,
    result_markdown,
    worst_examples_png,
)
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, coco_categories

THRESHOLD = 0.5


def coco(images: dict[int, list[tuple[str, tuple[float, float, float, float]]]]) -> dict:
    """A COCO split of 400x300 images from {image id: [(label, (x1, y1, x2, y2)), ...]}."""
    annotations = [
        {"id": n, "image_id": image_id, "category_id": CATEGORY_ID_BY_NAME[label],
         "bbox": [x1, y1, x2 - x1, y2 - y1]}
        for n, (image_id, label, (x1, y1, x2, y2)) in enumerate(
            ((i, label, box) for i, boxes in images.items() for label, box in boxes), start=1)
    ]
    return {
        "images": [{"id": i, "file_name": f"img{i}.jpg", "width": 400, "height": 300}
                   for i in images],
        "annotations": annotations,
        "categories": coco_categories(),
    }


def det(label: str, box: tuple[float, float, float, float], score: float = 0.9) -> Detection:
    return Detection(label=label, score=score, box=box)


SCRATCH_BOX = (10.0, 10.0, 110.0, 40.0)
DENT_BOX = (150.0, 100.0, 250.0, 200.0)
OTHER_DENT_BOX = (300.0, 50.0, 360.0, 120.0)


def test_perfect_predictions_give_ap_one_and_perfect_answers():
    gt = coco({1: [("scratch", SCRATCH_BOX), ("dent", DENT_BOX)], 2: [("dent", OTHER_DENT_BOX)],
               3: []})
    predictions = {1: [det("scratch", SCRATCH_BOX), det("dent", DENT_BOX)],
                   2: [det("dent", OTHER_DENT_BOX)]}

    result = evaluate_detections(gt, predictions, THRESHOLD)

    assert result.coco["AP"] == pytest.approx(1.0)
    assert result.coco["AP50"] == pytest.approx(1.0)
    assert result.coco["AP75"] == pytest.approx(1.0)
    for name in ("scratch", "dent"):
        assert result.classes[name].ap == pytest.approx(1.0)
        assert result.classes[name].ap50 == pytest.approx(1.0)
    assert (result.overall.precision, result.overall.recall, result.overall.f1) == (1.0, 1.0, 1.0)
    assert result.none_accuracy == 1.0
    assert result.worst_images == []


def test_no_predictions_give_zero_ap_and_undefined_precision():
    gt = coco({1: [("scratch", SCRATCH_BOX)], 2: [("dent", DENT_BOX)], 3: []})

    result = evaluate_detections(gt, {}, THRESHOLD)

    assert result.coco["AP"] == 0.0
    assert result.coco["AP50"] == 0.0
    assert result.classes["scratch"].ap == 0.0
    assert result.overall.recall == 0.0
    assert result.overall.precision is None  # nothing predicted: no precision to speak of
    assert result.overall.f1 == 0.0
    flat = result.flat_metrics()
    assert "precision" not in flat and flat["recall"] == 0.0
    assert result.none_accuracy == pytest.approx(1 / 3)  # only the clean image is right


@pytest.mark.parametrize(
    ("shift", "hit"),
    [(33.0, True), (34.0, False)],  # same-size box shifted right: IoU = (100 - s) / (100 + s)
)
def test_shifted_box_counts_as_hit_only_above_iou_half(shift: float, hit: bool):
    truth = (100.0, 100.0, 200.0, 200.0)
    shifted = (100.0 + shift, 100.0, 200.0 + shift, 200.0)
    assert (box_iou(truth, shifted) >= 0.5) is hit
    assert abs(box_iou(truth, shifted) - 0.5) < 0.01  # really "just" under / over

    result = evaluate_detections(coco({1: [("dent", truth)]}), {1: [det("dent", shifted)]},
                                 THRESHOLD)

    assert result.coco["AP50"] == pytest.approx(1.0 if hit else 0.0)
    assert result.classes["dent"].ap50 == pytest.approx(1.0 if hit else 0.0)
    assert result.coco["AP75"] == 0.0
    counts = result.classes["dent"].counts
    assert (counts.tp, counts.fp, counts.fn) == ((1, 0, 0) if hit else (0, 1, 1))


def test_precision_recall_f1_match_hand_count():
    second_scratch = (20.0, 200.0, 120.0, 230.0)
    gt = coco({
        1: [("scratch", SCRATCH_BOX), ("scratch", second_scratch), ("dent", DENT_BOX)],
        2: [("scratch", SCRATCH_BOX)],
    })
    predictions = {
        1: [
            det("scratch", SCRATCH_BOX, 0.9),  # TP
            det("scratch", (300.0, 10.0, 390.0, 30.0), 0.8),  # FP: nothing there
            det("dent", DENT_BOX, 0.7),  # TP
            det("scratch", second_scratch, 0.3),  # below threshold: scratch #2 missed (FN)
        ],
        2: [
            det("scratch", SCRATCH_BOX, 0.9),  # TP
            det("scratch", (12.0, 10.0, 112.0, 40.0), 0.6),  # duplicate of a matched truth: FP
        ],
    }

    result = evaluate_detections(gt, predictions, THRESHOLD)

    scratch, dent = result.classes["scratch"].counts, result.classes["dent"].counts
    assert (scratch.tp, scratch.fp, scratch.fn) == (2, 2, 1)
    assert scratch.precision == pytest.approx(2 / 4)
    assert scratch.recall == pytest.approx(2 / 3)
    assert scratch.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert (dent.tp, dent.fp, dent.fn) == (1, 0, 0)
    overall = result.overall
    assert (overall.precision, overall.recall) == (pytest.approx(3 / 5), pytest.approx(3 / 4))
    flat = result.flat_metrics()
    assert flat["precision_scratch"] == pytest.approx(0.5)
    assert flat["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))


def test_none_accuracy_matches_hand_count():
    gt = coco({
        1: [("scratch", SCRATCH_BOX)],  # damaged, answered damaged (even a wrong box counts)
        2: [("dent", DENT_BOX)],  # damaged, only a low score: answered "None"
        3: [],  # clean, answered "None"
        4: [],  # clean, nothing at all: "None"
        5: [],  # clean, a false alarm: answered damaged
    })
    predictions = {
        1: [det("dent", OTHER_DENT_BOX, 0.6)],
        2: [det("dent", DENT_BOX, 0.2)],
        3: [det("scratch", SCRATCH_BOX, 0.49)],
        5: [det("scratch", SCRATCH_BOX, 0.5)],  # the threshold itself counts
    }

    answers = evaluate_detections(gt, predictions, THRESHOLD).answers

    assert answers.damaged_answered_damaged == 1
    assert answers.damaged_answered_none == 1
    assert answers.clean_answered_none == 2
    assert answers.clean_answered_damaged == 1
    assert answers.accuracy == pytest.approx(3 / 5)


def test_confusion_counts_match_hand_count_with_class_agnostic_matching():
    gt = coco({
        1: [("scratch", SCRATCH_BOX), ("dent", DENT_BOX)],
        2: [("dent", OTHER_DENT_BOX)],
        3: [],
    })
    predictions = {
        1: [det("dent", SCRATCH_BOX), det("dent", DENT_BOX)],  # scratch taken for a dent; a dent
        2: [det("dent", OTHER_DENT_BOX, 0.1)],  # below threshold: dent missed
        3: [det("scratch", SCRATCH_BOX), det("scratch", DENT_BOX)],  # two false alarms
    }

    result = evaluate_detections(gt, predictions, THRESHOLD)

    assert result.confusion == {
        "scratch": {"scratch": 0, "dent": 1, "background": 0},
        "dent": {"scratch": 0, "dent": 1, "background": 1},
        "background": {"scratch": 2, "dent": 0, "background": 0},
    }
    # Per class, image 1 has a missed scratch and a false dent, image 2 a miss, image 3 two FPs.
    assert [(w.file_name, w.errors) for w in result.worst_images] == [
        ("img1.jpg", 2), ("img3.jpg", 2), ("img2.jpg", 1)]


def test_class_without_ground_truth_is_reported_as_not_available():
    gt = coco({1: [("scratch", SCRATCH_BOX)], 2: []})
    predictions = {1: [det("scratch", SCRATCH_BOX)], 2: [det("dent", DENT_BOX)]}

    result = evaluate_detections(gt, predictions, THRESHOLD)

    assert result.classes["dent"].ap is None and result.classes["dent"].ap50 is None
    assert result.pr_curves["dent"] is None
    assert result.classes["scratch"].ap == pytest.approx(1.0)
    assert result.coco["AP"] == pytest.approx(1.0)  # COCO averages over classes with truth
    assert "AP_dent" not in result.flat_metrics()
    assert "| dent | 0 | n/a | n/a |" in result_markdown(result)


def test_empty_ground_truth_and_empty_split_do_not_crash():
    clean = evaluate_detections(coco({1: [], 2: []}), {1: [det("dent", DENT_BOX)]}, THRESHOLD)
    assert clean.coco["AP"] is None
    assert clean.none_accuracy == pytest.approx(1 / 2)
    assert clean.confusion["background"]["dent"] == 1

    nothing = evaluate_detections(coco({}), {}, THRESHOLD)
    assert nothing.images == 0
    assert nothing.none_accuracy is None
    assert nothing.flat_metrics() == {}


def test_reads_ground_truth_from_a_coco_file(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps(coco({1: [("dent", DENT_BOX)]})))

    result = evaluate_detections(path, {1: [det("dent", DENT_BOX)]}, THRESHOLD)

    assert result.coco["AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ground_truth", "predictions", "message"),
    [
        (coco({1: []}), {7: [det("dent", DENT_BOX)]}, "image ids not in the ground truth: [7]"),
        (coco({1: []}), {1: [det("rust", DENT_BOX)]}, "image 1: detection label 'rust'"),
        ({**coco({1: []}), "annotations": [{"id": 5, "image_id": 1, "category_id": 9,
                                            "bbox": [0, 0, 5, 5]}]}, {}, "annotation 5"),
        ({"annotations": []}, {}, "no 'images' list"),
        ("does/not/exist.json", {}, "cannot read COCO ground truth does/not/exist.json"),
    ],
)
def test_bad_input_raises_error_naming_the_item(ground_truth, predictions, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate_detections(ground_truth, predictions, THRESHOLD)


def test_report_renders_as_json_markdown_and_png_plots():
    gt = coco({1: [("scratch", SCRATCH_BOX), ("dent", DENT_BOX)], 2: []})
    good = evaluate_detections(gt, {1: [det("scratch", SCRATCH_BOX), det("dent", DENT_BOX)]},
                               THRESHOLD)
    weak = evaluate_detections(gt, {1: [det("dent", DENT_BOX)]}, THRESHOLD)

    payload = json.loads(json.dumps(good.to_dict()))
    assert payload["classes"]["dent"]["ap50"] == pytest.approx(1.0)
    assert len(payload["pr_curves"]["scratch"]) == len(payload["recall_thresholds"]) == 101
    table = comparison_markdown({"challenger": good, "champion": weak})
    assert "| AP50_scratch | 1.000 | 0.000 |" in table
    assert "| damaged | 1 | 0 |" in result_markdown(good)
    for png in (pr_curves_png(good), confusion_matrix_png(weak)):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.width > 100


def test_worst_examples_sheet_shows_only_images_with_errors(tmp_path):
    gt = coco({1: [("scratch", SCRATCH_BOX)], 2: [("dent", DENT_BOX)], 3: []})
    for image_id in (1, 2, 3):
        Image.new("RGB", (400, 300), (90, 110, 140)).save(tmp_path / f"img{image_id}.jpg")
    predictions = {1: [det("scratch", SCRATCH_BOX)], 3: [det("dent", DENT_BOX)]}
    result = evaluate_detections(gt, predictions, THRESHOLD)

    png = worst_examples_png(result, gt, predictions, tmp_path, columns=3, thumb_size=100)

    assert [w.file_name for w in result.worst_images] == ["img2.jpg", "img3.jpg"]
    sheet = Image.open(io.BytesIO(png))
    assert sheet.size == (2 * 100 + 3 * 4, 100 + 2 * 4)  # two cells and their gaps
    perfect = evaluate_detections(gt, {1: predictions[1], 2: [det("dent", DENT_BOX)]}, THRESHOLD)
    assert worst_examples_png(perfect, gt, {}, tmp_path) is None


def _pycocotools_stats(gt: dict, detections: dict[int, list[Detection]]) -> np.ndarray:
    """COCOeval's summary, straight from pycocotools with its defaults (maxDets 1/10/100)."""
    results = [
        {"image_id": image_id, "category_id": CATEGORY_ID_BY_NAME[d.label], "score": d.score,
         "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]]}
        for image_id, found in detections.items() for d in found
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        for ann in coco_gt.dataset["annotations"]:
            ann.update(iscrowd=0, area=ann["bbox"][2] * ann["bbox"][3])
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def _crowded_predictions(seed: int = 3) -> tuple[dict, dict[int, list[Detection]]]:
    """Three images, each with 120 detections: mostly low-scoring clutter, with the true boxes
    found at ranks past 20 and at scores under 0.05 (where a cut-short evaluation stops)."""
    rng = np.random.default_rng(seed)
    truths = {1: [("scratch", (10.0, 10.0, 60.0, 22.0)), ("dent", (200.0, 100.0, 300.0, 220.0))],
              2: [("scratch", (100.0, 150.0, 180.0, 165.0))],
              3: [("dent", (20.0, 20.0, 140.0, 120.0)), ("scratch", (300.0, 250.0, 340.0, 262.0))]}
    predictions: dict[int, list[Detection]] = {}
    for image_id, boxes in truths.items():
        found = []
        for _ in range(120):
            x, y = rng.uniform(0, 330), rng.uniform(0, 250)
            found.append(det(str(rng.choice(["scratch", "dent"])),
                             (x, y, x + rng.uniform(5, 60), y + rng.uniform(5, 40)),
                             float(rng.uniform(0.0005, 0.2))))
        found.sort(key=lambda d: -d.score)
        for rank, (label, box) in zip((25, 60), boxes, strict=False):
            found.insert(rank, det(label, box, 0.03))  # true, but weak and ranked low
        predictions[image_id] = found
    return coco(truths), predictions


def test_ap_follows_the_coco_protocol_with_100_detections_per_image():
    gt, predictions = _crowded_predictions()
    protocol = {image_id: sorted((d for d in found if d.score >= 0.001),
                                 key=lambda d: -d.score)[:100]
                for image_id, found in predictions.items()}
    expected = _pycocotools_stats(gt, protocol)

    result = evaluate_detections(gt, predictions, THRESHOLD)

    assert result.coco["AP"] == pytest.approx(expected[0])
    assert result.coco["AP50"] == pytest.approx(expected[1])
    assert result.coco["APs"] == pytest.approx(expected[3])
    assert result.coco["AP50"] > 0.0  # the weak true boxes are ranked, not cut away
    cut_short = {image_id: [d for d in found if d.score >= 0.05][:20]
                 for image_id, found in predictions.items()}
    assert evaluate_detections(gt, cut_short, THRESHOLD).coco["AP50"] == 0.0


def test_operating_threshold_changes_precision_but_never_ap():
    gt, predictions = _crowded_predictions()

    low = evaluate_detections(gt, predictions, 0.01)
    high = evaluate_detections(gt, predictions, 0.9)

    assert low.coco == high.coco and low.damage == high.damage
    assert low.overall.tp > 0 and high.overall.tp == 0


def test_damage_ap_counts_a_box_found_as_the_other_class():
    gt = coco({1: [("dent", DENT_BOX)], 2: [("scratch", SCRATCH_BOX)]})
    predictions = {1: [det("scratch", DENT_BOX)], 2: [det("scratch", SCRATCH_BOX)]}

    result = evaluate_detections(gt, predictions, THRESHOLD)

    assert result.classes["dent"].ap50 == 0.0
    assert result.damage["AP50"] == pytest.approx(1.0)
    assert result.flat_metrics()["damage_AP50"] == pytest.approx(1.0)


def test_ap50_by_size_separates_small_and_large_boxes():
    small, large = (10.0, 10.0, 30.0, 20.0), (100.0, 50.0, 300.0, 250.0)  # 200 and 40,000 px²
    gt = coco({1: [("scratch", small), ("scratch", large)]})

    result = evaluate_detections(gt, {1: [det("scratch", small)]}, THRESHOLD)

    assert result.classes["scratch"].ap50_by_size == {"small": pytest.approx(1.0),
                                                       "medium": None, "large": 0.0}
    assert result.coco["APs"] == pytest.approx(1.0) and result.coco["APl"] == 0.0


def test_box_outcomes_tell_missed_from_other_class_from_badly_localised():
    far = (300.0, 200.0, 390.0, 290.0)
    gt = coco({1: [("scratch", SCRATCH_BOX), ("dent", DENT_BOX), ("dent", OTHER_DENT_BOX),
                   ("dent", far)]})
    predictions = {1: [
        det("scratch", SCRATCH_BOX),  # found
        det("scratch", DENT_BOX),  # the dent, found as a scratch
        det("dent", (300.0, 50.0, 325.0, 120.0)),  # part of the other dent: IoU 0.42
        det("dent", far, 0.2),  # would find the far dent, but under the operating threshold
    ]}

    result = evaluate_detections(gt, predictions, THRESHOLD)

    assert result.classes["scratch"].outcomes == BoxOutcomes(found=1)
    assert result.classes["dent"].outcomes == BoxOutcomes(
        found=0, other_class=1, badly_localised=1, missed=1)
    assert "| dent | 0 | 1 | 1 | 1 |" in result_markdown(result)
