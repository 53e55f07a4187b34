"""Label Studio results to pixel boxes and back, with the rules for what annotators hand in.

Tasks arrive as ``TaskRef`` (id, data, annotations as dicts with ``id``, ``result``,
``was_cancelled``, ``updated_at``, ``last_action``), as the resource returns them. Nothing here
talks to Label Studio, and nothing here raises on bad items: each one is counted.

Rules, per task (the README's "What happens to malformed work" repeats them):

- ``missing_sha256``: the task data has no valid image sha256, so it cannot join the image
  store. The whole task is rejected.
- ``missing_image_size``: neither the task data (``width``/``height``) nor the results
  (``original_width``/``original_height``) give the image size. The task is rejected.
- Cancelled annotations (the annotator pressed Skip) are ignored. A task with nothing but
  cancelled annotations is listed as ``skipped``.
- Several completed annotations on one task: work done in Label Studio beats imported
  annotations (``last_action == "imported"``). Among the same kind the most recently updated
  one wins, and on equal times the higher id. Only the winner counts; the others are not merged.
- Two tasks for one image: the task whose winning annotation wins the same comparison is kept.
  The other is rejected as ``duplicate_image``.

Per box of the winning annotation:

- ``unknown_label``: the label is not exactly one of ``scratch`` or ``dent``. The box is rejected.
- ``malformed_box``: x, y, width or height is missing or not a number. The box is rejected.
- ``zero_area_box``: the width or height is zero or negative. The box is rejected.
- A rotated box (``rotation`` not a multiple of 360) is replaced by the axis-aligned box that
  encloses it (Label Studio rotates around the top-left corner). It is then clipped like any
  other box and counted in ``rotated_boxes``.
- A box partly outside the image is clipped to it and counted in ``clipped_boxes``.
  ``outside_image``: no part of the box is inside the image. The box is rejected.
- ``unsupported_result``: the result has another type or comes from another control. It is
  rejected.

The image's verdict:

- "no damage" and no boxes: the image is a negative (``no_damage=True``).
- ``no_damage_with_boxes``: the image has boxes and "no damage" too. The boxes win, and the
  choice is rejected.
- ``no_valid_boxes``: boxes were drawn but all were rejected. The image is left out: it shows
  damage, so it must not become a negative.
- ``empty_annotation``: nothing was drawn or chosen. The image is left out, because only an
  explicit "no damage" makes a negative.
- ``unknown_split``: the task data pins a split other than train/val/test. The pin is dropped
  and the image is kept.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from carsdepo_assets.labeling.config import (
    BOXES_NAME,
    CHOICES_TYPE,
    IMAGE_NAME,
    NO_DAMAGE_CHOICE,
    RECTANGLE_TYPE,
    VERDICT_NAME,
)
from carsdepo_assets.labeling.snapshot import (
    AnnotationSnapshot,
    LabeledBox,
    LabeledImage,
    RejectedItem,
)
from carsdepo_assets.labeling.tasks import TaskRef
from carsdepo_assets.taxonomy import CLASS_NAMES

IMPORTED_ACTION = "imported"  # annotation last_action marking boxes brought in by import-coco
SOURCE_IMPORTED = "imported"
SOURCE_LABEL_STUDIO = "label_studio"
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLIP_TOLERANCE_PX = 0.01  # percent round trips move edges by ~1e-13 px: that is not clipping
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Conversion:
    """The snapshot plus the counts that are not rejections (for run metadata)."""

    snapshot: AnnotationSnapshot
    tasks_seen: int = 0
    rotated_boxes: int = 0
    cancelled_annotations: int = 0

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(item.reason for item in self.snapshot.rejected).items()))


@dataclass
class _TaskOutcome:
    image: LabeledImage | None = None
    rejected: list[RejectedItem] = field(default_factory=list)
    clipped: int = 0
    rotated: int = 0
    cancelled: int = 0
    rank: tuple = ()


def convert_tasks(tasks: Iterable[TaskRef]) -> Conversion:
    """Resolve every task into at most one ``LabeledImage``; count everything left out."""
    conversion = Conversion(snapshot=AnnotationSnapshot())
    kept: dict[str, _TaskOutcome] = {}
    rejected: list[RejectedItem] = []
    for task in tasks:
        conversion.tasks_seen += 1
        outcome = convert_task(task)
        rejected.extend(outcome.rejected)
        conversion.rotated_boxes += outcome.rotated
        conversion.cancelled_annotations += outcome.cancelled
        if outcome.image is None:
            continue
        earlier = kept.get(outcome.image.sha256)
        if earlier is None or outcome.rank > earlier.rank:
            kept[outcome.image.sha256] = outcome
            loser = earlier
        else:
            loser = outcome
        if loser is not None:
            rejected.append(RejectedItem(
                loser.image.task_id, "duplicate_image",
                f"image {loser.image.sha256[:12]} is also task {_winner_task(kept, loser)}",
            ))
    for outcome in kept.values():
        conversion.snapshot.clipped_boxes += outcome.clipped
    conversion.snapshot.images = sorted(
        (outcome.image for outcome in kept.values()), key=lambda image: image.sha256
    )
    conversion.snapshot.rejected = sorted(
        rejected, key=lambda item: (item.task_id or 0, item.reason, item.detail)
    )
    return conversion


def _winner_task(kept: dict[str, _TaskOutcome], loser: _TaskOutcome) -> int | None:
    return kept[loser.image.sha256].image.task_id


def convert_task(task: TaskRef) -> _TaskOutcome:
    """One task to its labeled image (or nothing), following the module's rules."""
    task_id = task.id
    data = task.data or {}
    outcome = _TaskOutcome()
    sha = data.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        outcome.rejected.append(RejectedItem(task_id, "missing_sha256", f"data.sha256={sha!r}"))
        return outcome
    annotations = task.annotations or []
    completed = [a for a in annotations if not a.get("was_cancelled")]
    outcome.cancelled = len(annotations) - len(completed)
    if not completed:
        if outcome.cancelled:
            outcome.rejected.append(RejectedItem(task_id, "skipped", "every annotation skipped"))
        return outcome
    winner = max(completed, key=annotation_rank)
    size = _image_size(data, winner.get("result") or [])
    if size is None:
        outcome.rejected.append(RejectedItem(task_id, "missing_image_size", f"image {sha[:12]}"))
        return outcome
    width, height = size

    boxes: list[LabeledBox] = []
    box_rejections = 0
    no_damage = False
    for item in winner.get("result") or []:
        where = f"annotation {winner.get('id')} region {item.get('id', '?')}"
        kind = (item.get("type"), item.get("from_name"))
        if kind == (CHOICES_TYPE, VERDICT_NAME):
            choices = (item.get("value") or {}).get("choices") or []
            if NO_DAMAGE_CHOICE in choices:
                no_damage = True
            continue
        if kind != (RECTANGLE_TYPE, BOXES_NAME):
            outcome.rejected.append(RejectedItem(
                task_id, "unsupported_result", f"{where}: type {kind[0]!r} from {kind[1]!r}"
            ))
            continue
        box, reason, clipped, rotated = rectangle_to_box(item.get("value") or {}, width, height)
        if box is None:
            box_rejections += 1
            outcome.rejected.append(RejectedItem(task_id, reason, where))
            continue
        boxes.append(box)
        outcome.clipped += clipped
        outcome.rotated += rotated

    if boxes and no_damage:
        outcome.rejected.append(RejectedItem(
            task_id, "no_damage_with_boxes", f"annotation {winner.get('id')}: boxes kept"
        ))
        no_damage = False
    if not boxes and not no_damage:
        reason = "no_valid_boxes" if box_rejections else "empty_annotation"
        outcome.rejected.append(RejectedItem(task_id, reason, f"annotation {winner.get('id')}"))
        return outcome

    split = data.get("split") or None
    if split is not None and split not in SPLITS:
        outcome.rejected.append(RejectedItem(
            task_id, "unknown_split", f"split {split!r} is not one of {SPLITS}; pin dropped"
        ))
        split = None
    outcome.rank = annotation_rank(winner)
    outcome.image = LabeledImage(
        sha256=sha,
        width=width,
        height=height,
        boxes=tuple(boxes),
        no_damage=no_damage,
        source=SOURCE_IMPORTED if is_imported(winner) else SOURCE_LABEL_STUDIO,
        group=data.get("group") or None,
        fixed_split=split,
        task_id=task_id,
        annotation_id=winner.get("id"),
        updated_at=_as_text(winner.get("updated_at")),
    )
    return outcome


def is_imported(annotation: dict) -> bool:
    return annotation.get("last_action") == IMPORTED_ACTION


def annotation_rank(annotation: dict) -> tuple[bool, datetime, int]:
    """Sort key of the documented rule: human over imported, then newest, then highest id."""
    return (
        not is_imported(annotation),
        parse_timestamp(annotation.get("updated_at")) or _EPOCH,
        int(annotation.get("id") or 0),
    )


def parse_timestamp(value: str | datetime | None) -> datetime | None:
    """Label Studio's ISO timestamps (``...Z``) as aware datetimes; None stays None."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _as_text(value: str | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _image_size(data: dict, result: Sequence[dict]) -> tuple[int, int] | None:
    candidates = [(data.get("width"), data.get("height"))] + [
        (item.get("original_width"), item.get("original_height")) for item in result
    ]
    for width, height in candidates:
        if _positive_number(width) and _positive_number(height):
            return int(width), int(height)
    return None


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def rectangle_to_box(
    value: dict, width: int, height: int
) -> tuple[LabeledBox | None, str, bool, bool]:
    """A rectangle's percent value to a pixel box: (box or None, reason, clipped, rotated)."""
    labels = value.get("rectanglelabels") or []
    if len(labels) != 1 or labels[0] not in CLASS_NAMES:
        return None, "unknown_label", False, False
    numbers = [value.get(key) for key in ("x", "y", "width", "height")]
    if not all(_finite_number(number) for number in numbers):
        return None, "malformed_box", False, False
    x, y, w, h = (float(number) for number in numbers)
    if w <= 0 or h <= 0:
        return None, "zero_area_box", False, False
    x, y, w, h = x / 100 * width, y / 100 * height, w / 100 * width, h / 100 * height
    rotation = value.get("rotation") or 0
    rotated = _finite_number(rotation) and float(rotation) % 360 != 0
    if rotated:
        x, y, w, h = _enclosing_box(x, y, w, h, float(rotation))
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + w), min(float(height), y + h)
    if x2 <= x1 or y2 <= y1:
        return None, "outside_image", False, rotated
    clipped = max(abs(x1 - x), abs(y1 - y), abs(x2 - x - w), abs(y2 - y - h)) > _CLIP_TOLERANCE_PX
    return LabeledBox(labels[0], (x1, y1, x2 - x1, y2 - y1)), "", clipped, rotated


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _enclosing_box(x: float, y: float, w: float, h: float, degrees: float) -> tuple[float, ...]:
    """Axis-aligned box around a w×h rectangle rotated clockwise about its corner (x, y)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(dx * cos - dy * sin, dx * sin + dy * cos) for dx, dy in
               ((0, 0), (w, 0), (w, h), (0, h))]
    xs = [x + cx for cx, _ in corners]
    ys = [y + cy for _, cy in corners]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def box_results(
    boxes: Sequence[LabeledBox], width: int, height: int, scores: Sequence[float] | None = None
) -> list[dict]:
    """Pixel boxes as Label Studio rectangle results (percent of the image), for one task."""
    results = []
    for index, box in enumerate(boxes):
        x, y, w, h = box.bbox
        item = {
            "id": uuid.uuid5(uuid.NAMESPACE_OID, f"{index}:{box}").hex[:10],
            "type": RECTANGLE_TYPE,
            "from_name": BOXES_NAME,
            "to_name": IMAGE_NAME,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": x / width * 100,
                "y": y / height * 100,
                "width": w / width * 100,
                "height": h / height * 100,
                "rotation": 0,
                "rectanglelabels": [box.label],
            },
        }
        if scores is not None:
            item["score"] = float(scores[index])
        results.append(item)
    return results


def no_damage_result() -> list[dict]:
    """The explicit "no damage" verdict as a Label Studio result."""
    return [{
        "id": "no-damage",
        "type": CHOICES_TYPE,
        "from_name": VERDICT_NAME,
        "to_name": IMAGE_NAME,
        "value": {"choices": [NO_DAMAGE_CHOICE]},
    }]


def annotation_result(boxes: Sequence[LabeledBox], width: int, height: int) -> list[dict]:
    """What an annotator submits for an image: its boxes, or "no damage" when there are none."""
    return box_results(boxes, width, height) if boxes else no_damage_result()
