"""What pre-annotations saved: each submitted annotation compared with the model's prediction.

When a task carries a model's pre-annotation, the annotator's final boxes are matched to the
predicted ones (same label, greedily by IoU, at least ``MATCH_IOU``). A predicted box that
reaches the final annotation untouched (IoU at least ``UNCHANGED_IOU``) was *accepted*; a matched
one that moved was *adjusted*; an unmatched predicted box was *deleted*; an unmatched final box
was *drawn* from nothing. Measured from Label Studio's own records, so it holds for people and
for the simulated reviewers alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

from carsdepo_assets.labeling.config import RECTANGLE_TYPE
from carsdepo_assets.labeling.results import annotation_rank, rectangle_to_box
from carsdepo_assets.labeling.snapshot import LabeledBox
from carsdepo_assets.labeling.tasks import TaskRef

MATCH_IOU = 0.3
UNCHANGED_IOU = 0.98  # a box saved unchanged reads back within rounding of its percent values


@dataclass
class ReviewOutcome:
    """Boxes of reviewed pre-annotations, by what the annotator did with them."""

    images: int = 0
    accepted: int = 0
    adjusted: int = 0
    deleted: int = 0
    drawn: int = 0

    def add(self, other: ReviewOutcome) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    @property
    def accepted_share(self) -> float:
        """Share of the final boxes the annotator did not have to draw or move."""
        final = self.accepted + self.adjusted + self.drawn
        return self.accepted / final if final else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "accepted_share": round(self.accepted_share, 3)}


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two COCO (x, y, width, height) boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    first: Sequence[LabeledBox], second: Sequence[LabeledBox], min_iou: float = MATCH_IOU
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matches (index in first, index in second, IoU), same label only,
    best overlap first."""
    pairs = sorted(
        ((iou(a.bbox, b.bbox), i, j) for i, a in enumerate(first) for j, b in enumerate(second)
         if a.label == b.label),
        reverse=True,
    )
    used_first, used_second, matches = set(), set(), []
    for overlap, i, j in pairs:
        if overlap < min_iou or i in used_first or j in used_second:
            continue
        used_first.add(i)
        used_second.add(j)
        matches.append((i, j, overlap))
    return matches


def compare_review(predicted: Sequence[LabeledBox], final: Sequence[LabeledBox]) -> ReviewOutcome:
    """What the annotator did with one image's predicted boxes (see the module)."""
    matches = match_boxes(predicted, final)
    accepted = sum(overlap >= UNCHANGED_IOU for _, _, overlap in matches)
    return ReviewOutcome(images=1, accepted=accepted, adjusted=len(matches) - accepted,
                         deleted=len(predicted) - len(matches), drawn=len(final) - len(matches))


def result_boxes(result: Iterable[dict], width: int, height: int) -> list[LabeledBox]:
    """The rectangles of a Label Studio result as pixel boxes (anything else is ignored)."""
    boxes = []
    for item in result:
        if item.get("type") == RECTANGLE_TYPE:
            box, *_ = rectangle_to_box(item.get("value") or {}, width, height)
            if box is not None:
                boxes.append(box)
    return boxes


class ReviewKey(NamedTuple):
    """Reviews are counted per batch of photos and per model version that pre-annotated it."""

    batch: str
    model_version: str


def review_outcomes(tasks: Iterable[TaskRef]) -> dict[ReviewKey, ReviewOutcome]:
    """Per batch and model version, what annotators did with the pre-annotations of completed
    tasks."""
    outcomes: dict[ReviewKey, ReviewOutcome] = {}
    for task in tasks:
        completed = [a for a in task.annotations if not a.get("was_cancelled")]
        width, height = task.data.get("width"), task.data.get("height")
        if not completed or not task.predictions or not width or not height:
            continue
        prediction = task.predictions[-1]
        final = max(completed, key=annotation_rank)
        outcome = compare_review(result_boxes(prediction.get("result") or [], width, height),
                                 result_boxes(final.get("result") or [], width, height))
        key = ReviewKey(task.data.get("batch") or "unknown",
                        prediction.get("model_version") or "unknown")
        outcomes.setdefault(key, ReviewOutcome()).add(outcome)
    return outcomes


def review_total(outcomes: Mapping[ReviewKey, ReviewOutcome]) -> ReviewOutcome:
    total = ReviewOutcome()
    for outcome in outcomes.values():
        total.add(outcome)
    return total


def review_rows(outcomes: Mapping[ReviewKey, ReviewOutcome]) -> list[dict]:
    """One JSON-ready row per batch and model version, in batch order."""
    return [{**key._asdict(), **outcome.as_dict()} for key, outcome in sorted(outcomes.items())]


def review_markdown(rows: Sequence[Mapping]) -> str:
    """The rows of ``review_rows`` as a markdown table (a sentence when there are none)."""
    if not rows:
        return "No reviewed pre-annotation yet."
    lines = ["| batch | model version | images | accepted | adjusted | deleted | drawn | "
             "accepted share |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['batch']} | {row['model_version']} | {row['images']} | {row['accepted']} "
              f"| {row['adjusted']} | {row['deleted']} | {row['drawn']} | "
              f"{row['accepted_share']:.0%} |" for row in rows]
    return "\n".join(lines)
