"""What pre-annotations saved, measured from the annotation against the prediction, and the
simulated reviewer's rule: keep a box on the damage, redraw a loose one, delete a false one,
draw a missed one."""

from __future__ import annotations

import random

from carsdepo_assets.labeling.results import box_results
from carsdepo_assets.labeling.review import (
    ReviewKey,
    ReviewOutcome,
    compare_review,
    review_markdown,
    review_outcomes,
    review_rows,
)
from carsdepo_assets.labeling.simulated import AnnotatorProfile, review_boxes
from carsdepo_assets.labeling.snapshot import LabeledBox
from carsdepo_assets.labeling.tasks import TaskRef

DAMAGE = LabeledBox("scratch", (100.0, 100.0, 80.0, 40.0))
DENT = LabeledBox("dent", (300.0, 200.0, 60.0, 60.0))
LOOSE = LabeledBox("scratch", (120.0, 110.0, 90.0, 50.0))  # IoU about 0.5 with DAMAGE
FALSE = LabeledBox("dent", (10.0, 10.0, 30.0, 30.0))


def test_each_predicted_box_is_counted_by_what_the_annotator_did_with_it():
    outcome = compare_review(predicted=[DAMAGE, LOOSE, FALSE], final=[DAMAGE, DENT])

    assert outcome == ReviewOutcome(images=1, accepted=1, adjusted=0, deleted=2, drawn=1)


def test_a_moved_box_is_adjusted_not_accepted():
    outcome = compare_review(predicted=[LOOSE], final=[DAMAGE])

    assert (outcome.accepted, outcome.adjusted, outcome.deleted, outcome.drawn) == (0, 1, 0, 0)
    assert outcome.accepted_share == 0.0


def test_the_reviewer_keeps_a_right_box_redraws_a_loose_one_and_draws_the_missed_damage():
    profile = AnnotatorProfile(jitter_px=1.0, miss_rate=0.0)
    truth = [DAMAGE, DENT]

    kept = review_boxes([DAMAGE, FALSE], truth, 640, 480, profile, random.Random(1))
    redrawn = review_boxes([LOOSE], truth, 640, 480, profile, random.Random(1))

    assert DAMAGE in kept and FALSE not in kept and len(kept) == 2  # DENT drawn
    assert LOOSE not in redrawn and len(redrawn) == 2
    assert compare_review([LOOSE], redrawn).adjusted == 1


def test_outcomes_are_measured_per_batch_and_model_version_from_label_studio_records():
    task = TaskRef(
        id=1, data={"sha256": "a" * 64, "width": 640, "height": 480, "batch": "incoming-dim"},
        annotations=[{"id": 5, "result": box_results([DAMAGE], 640, 480), "updated_at":
                      "2026-12-06T00:00:00Z", "was_cancelled": False}],
        predictions=({"model_version": "detector v1",
                      "result": box_results([DAMAGE, FALSE], 640, 480, scores=[0.9, 0.4])},),
    )

    outcomes = review_outcomes([task])

    assert outcomes == {ReviewKey("incoming-dim", "detector v1"):
                        ReviewOutcome(images=1, accepted=1, deleted=1)}
    rows = review_rows(outcomes)
    assert rows == [{"batch": "incoming-dim", "model_version": "detector v1", "images": 1,
                     "accepted": 1, "adjusted": 0, "deleted": 1, "drawn": 0,
                     "accepted_share": 1.0}]
    assert "| incoming-dim | detector v1 | 1 | 1 | 0 | 1 | 0 | 100% |" in review_markdown(rows)
