"""The conversion rules of ``labeling.results``, on hand-made Label Studio tasks (no server)."""

from __future__ import annotations

import pytest

from carsdepo_assets.labeling.results import (
    annotation_result,
    box_results,
    convert_tasks,
    no_damage_result,
    rectangle_to_box,
)
from carsdepo_assets.labeling.snapshot import LabeledBox
from carsdepo_assets.labeling.tasks import TaskRef

SHA = "a" * 64
OTHER_SHA = "b" * 64
W, H = 200, 100


def rect(label="scratch", x=10.0, y=10.0, w=20.0, h=20.0, rotation=0.0, region="r1") -> dict:
    """A rectangle result in percent, as Label Studio stores it."""
    return {
        "id": region, "type": "rectanglelabels", "from_name": "damage", "to_name": "image",
        "original_width": W, "original_height": H,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                  "rectanglelabels": [label]},
    }


def annotation(result, id=1, updated_at="2026-01-01T10:00:00Z", cancelled=False,
               imported=False) -> dict:
    return {"id": id, "result": result, "was_cancelled": cancelled, "updated_at": updated_at,
            "last_action": "imported" if imported else None}


def task(*annotations, id=1, sha=SHA, **data) -> TaskRef:
    return TaskRef(id=id, data={"sha256": sha, "width": W, "height": H, **data},
                   annotations=list(annotations))


def convert_one(*annotations, **data):
    conversion = convert_tasks([task(*annotations, **data)])
    return conversion, conversion.snapshot


def test_percent_rectangles_become_pixel_boxes_of_the_image():
    _, snapshot = convert_one(annotation([rect("dent", x=10, y=20, w=25, h=50)]))
    (image,) = snapshot.images
    assert image.boxes == (LabeledBox("dent", (20.0, 20.0, 50.0, 50.0)),)
    assert (image.sha256, image.width, image.height, image.no_damage) == (SHA, W, H, False)
    assert snapshot.rejected == []


def test_pixel_boxes_survive_the_round_trip_through_percent():
    boxes = [LabeledBox("scratch", (3.5, 7.25, 120.0, 1.5)), LabeledBox("dent", (0, 0, W, H))]
    back = [rectangle_to_box(item["value"], W, H) for item in box_results(boxes, W, H)]
    for original, (box, reason, clipped, rotated) in zip(boxes, back, strict=True):
        assert box.label == original.label and (reason, clipped, rotated) == ("", False, False)
        assert box.bbox == pytest.approx(original.bbox, abs=1e-9)


@pytest.mark.parametrize(
    ("region", "reason"),
    [
        (rect(label="broken"), "unknown_label"),
        ({**rect(), "value": {**rect()["value"], "rectanglelabels": ["scratch", "dent"]}},
         "unknown_label"),
        (rect(w=0), "zero_area_box"),
        (rect(h=-5), "zero_area_box"),
        (rect(x=120, y=10), "outside_image"),
        ({**rect(), "value": {**rect()["value"], "x": None}}, "malformed_box"),
        ({**rect(), "type": "polygonlabels"}, "unsupported_result"),
    ],
    ids=["unknown", "two-labels", "zero-width", "negative-height", "outside", "no-x", "polygon"],
)
def test_a_malformed_box_is_rejected_and_the_good_box_beside_it_kept(region, reason):
    good = rect("dent", region="good")
    conversion, snapshot = convert_one(annotation([good, {**region, "id": "bad"}]))
    assert [box.label for box in snapshot.images[0].boxes] == ["dent"]
    assert conversion.rejected_by_reason == {reason: 1}
    assert "region bad" in snapshot.rejected[0].detail


def test_a_box_partly_outside_the_image_is_clipped_and_counted():
    _, snapshot = convert_one(annotation([rect(x=90, y=-10, w=20, h=30)]))
    assert snapshot.images[0].boxes[0].bbox == pytest.approx((180.0, 0.0, 20.0, 20.0))
    assert snapshot.clipped_boxes == 1 and snapshot.rejected == []


def test_a_rotated_box_becomes_its_enclosing_axis_aligned_box():
    # 40×10 px at (100, 50), rotated 90° clockwise about that corner: 10×40 px to its left.
    conversion, snapshot = convert_one(annotation([rect(x=50, y=50, w=20, h=10, rotation=90)]))
    assert snapshot.images[0].boxes[0].bbox == pytest.approx((90.0, 50.0, 10.0, 40.0))
    assert conversion.rotated_boxes == 1 and snapshot.clipped_boxes == 0


def test_a_task_without_image_sha256_is_rejected_whole():
    conversion = convert_tasks([task(annotation([rect()]), sha=None)])
    assert conversion.snapshot.images == []
    assert conversion.rejected_by_reason == {"missing_sha256": 1}


def test_a_task_without_any_image_size_is_rejected():
    region = {key: value for key, value in rect().items() if not key.startswith("original_")}
    conversion = convert_tasks([TaskRef(1, {"sha256": SHA}, [annotation([region])])])
    assert conversion.rejected_by_reason == {"missing_image_size": 1}


def test_the_image_size_falls_back_to_the_results_when_the_task_data_lacks_it():
    conversion = convert_tasks([TaskRef(1, {"sha256": SHA}, [annotation([rect()])])])
    assert (conversion.snapshot.images[0].width, conversion.snapshot.images[0].height) == (W, H)


def test_skipped_annotations_are_ignored_and_a_fully_skipped_task_is_counted():
    conversion, snapshot = convert_one(annotation([], id=1, cancelled=True))
    assert snapshot.images == [] and conversion.rejected_by_reason == {"skipped": 1}

    conversion, snapshot = convert_one(
        annotation([], id=1, cancelled=True, updated_at="2026-02-01T00:00:00Z"),
        annotation([rect()], id=2, updated_at="2026-01-01T00:00:00Z"),
    )
    assert snapshot.images[0].annotation_id == 2 and conversion.cancelled_annotations == 1


def test_the_most_recently_updated_annotation_wins_and_ties_go_to_the_higher_id():
    older = annotation([rect("scratch")], id=5, updated_at="2026-01-01T10:00:00Z")
    newer = annotation([rect("dent")], id=3, updated_at="2026-01-02T10:00:00Z")
    _, snapshot = convert_one(older, newer)
    assert snapshot.images[0].boxes[0].label == "dent"

    tie_low = annotation([rect("scratch")], id=3)
    tie_high = annotation([rect("dent")], id=4)
    _, snapshot = convert_one(tie_high, tie_low)
    assert snapshot.images[0].annotation_id == 4


def test_work_done_in_label_studio_beats_a_newer_imported_annotation():
    human = annotation([rect("dent")], id=1, updated_at="2026-01-01T00:00:00Z")
    imported = annotation([rect("scratch")], id=2, updated_at="2026-03-01T00:00:00Z",
                          imported=True)
    _, snapshot = convert_one(imported, human)
    assert snapshot.images[0].annotation_id == 1
    assert snapshot.images[0].source == "label_studio"

    _, snapshot = convert_one(imported)
    assert snapshot.images[0].source == "imported"


def test_only_an_explicit_no_damage_makes_a_negative():
    conversion, snapshot = convert_one(annotation(no_damage_result()))
    assert snapshot.images[0].no_damage and snapshot.images[0].boxes == ()

    conversion, snapshot = convert_one(annotation([]))
    assert snapshot.images == [] and conversion.rejected_by_reason == {"empty_annotation": 1}

    conversion, snapshot = convert_one(annotation([rect(label="rust")]))
    assert snapshot.images == []
    assert conversion.rejected_by_reason == {"no_valid_boxes": 1, "unknown_label": 1}


def test_boxes_win_over_a_contradicting_no_damage_choice():
    conversion, snapshot = convert_one(annotation([rect()] + no_damage_result()))
    image = snapshot.images[0]
    assert not image.no_damage and len(image.boxes) == 1
    assert conversion.rejected_by_reason == {"no_damage_with_boxes": 1}


def test_two_tasks_of_one_image_keep_the_winning_annotation():
    early = task(annotation([rect("scratch")], id=1, updated_at="2026-01-01T00:00:00Z"), id=10)
    late = task(annotation([rect("dent")], id=2, updated_at="2026-01-05T00:00:00Z"), id=11)
    conversion = convert_tasks([late, early])
    assert [image.task_id for image in conversion.snapshot.images] == [11]
    assert [(item.task_id, item.reason) for item in conversion.snapshot.rejected] == [
        (10, "duplicate_image")
    ]


def test_group_and_published_split_come_from_the_task_data():
    _, snapshot = convert_one(annotation([rect()]), group="0017_JPEG_jpg", split="test")
    assert (snapshot.images[0].group, snapshot.images[0].fixed_split) == ("0017_JPEG_jpg", "test")

    conversion, snapshot = convert_one(annotation([rect()]), split="holdout")
    assert snapshot.images[0].fixed_split is None
    assert conversion.rejected_by_reason == {"unknown_split": 1}


def test_the_snapshot_version_does_not_depend_on_task_order():
    tasks = [task(annotation([rect()], id=1), id=1, sha=SHA),
             task(annotation(annotation_result([], W, H), id=2), id=2, sha=OTHER_SHA)]
    forward, backward = convert_tasks(tasks), convert_tasks(tasks[::-1])
    assert [image.sha256 for image in forward.snapshot.images] == [SHA, OTHER_SHA]
    assert forward.snapshot.version == backward.snapshot.version
