"""Rules a curated dataset must satisfy, as pure functions of its split COCO dicts.

Each returns ``CheckOutcome(passed, details)``; ``details`` is JSON-ready (counts, the offending
items, at most ``MAX_EXAMPLES`` of each) so the asset checks can show it as metadata as is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import NamedTuple

from carsdepo_assets.datasets.coco import split_counts
from carsdepo_assets.taxonomy import CLASS_NAMES

MAX_EXAMPLES = 10
DEFAULT_MIN_ANNOTATED = {"train": 2, "val": 1, "test": 1}
DEFAULT_CLASS_SHARE_FLOOR = 0.05


class CheckOutcome(NamedTuple):
    passed: bool
    details: dict


def boxes_inside_images(cocos: Mapping[str, dict], tolerance: float = 0.01) -> CheckOutcome:
    """Every box has a positive size and lies inside its image (within ``tolerance`` pixels)."""
    bad, total = [], 0
    for split, coco in cocos.items():
        images = {image["id"]: image for image in coco["images"]}
        for annotation in coco["annotations"]:
            total += 1
            image = images[annotation["image_id"]]
            x, y, width, height = annotation["bbox"]
            inside = (
                width > 0 and height > 0 and x >= -tolerance and y >= -tolerance
                and x + width <= image["width"] + tolerance
                and y + height <= image["height"] + tolerance
            )
            if not inside:
                bad.append({
                    "split": split, "file_name": image["file_name"], "sha256": image["sha256"],
                    "bbox": annotation["bbox"], "image_size": [image["width"], image["height"]],
                })
    return CheckOutcome(
        not bad, {"boxes": total, "bad_boxes": len(bad), "examples": bad[:MAX_EXAMPLES]}
    )


def no_split_leakage(cocos: Mapping[str, dict]) -> CheckOutcome:
    """No image (sha256) and no group (copies of one source photo) is in two splits."""
    splits_of_image: dict[str, set[str]] = defaultdict(set)
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for split, coco in cocos.items():
        for image in coco["images"]:
            splits_of_image[image["sha256"]].add(split)
            if image.get("group"):
                splits_of_group[image["group"]].add(split)
    leaked_images = _in_several(splits_of_image)
    leaked_groups = _in_several(splits_of_group)
    return CheckOutcome(not leaked_images and not leaked_groups, {
        "images_in_several_splits": len(leaked_images),
        "groups_in_several_splits": len(leaked_groups),
        "image_examples": leaked_images[:MAX_EXAMPLES],
        "group_examples": leaked_groups[:MAX_EXAMPLES],
    })


def min_annotated_images(
    cocos: Mapping[str, dict], minimums: Mapping[str, int] = DEFAULT_MIN_ANNOTATED
) -> CheckOutcome:
    """Each split has at least its minimum of images with a box (negatives do not count)."""
    annotated = {split: split_counts(coco)["annotated_images"] for split, coco in cocos.items()}
    below = {
        split: {"annotated_images": annotated.get(split, 0), "minimum": minimum}
        for split, minimum in minimums.items() if annotated.get(split, 0) < minimum
    }
    return CheckOutcome(
        not below, {"annotated_images": annotated, "minimums": dict(minimums), "below": below}
    )


def class_share_floor(
    cocos: Mapping[str, dict], floor: float = DEFAULT_CLASS_SHARE_FLOOR
) -> CheckOutcome:
    """Every class has at least ``floor`` of all box instances (all splits together)."""
    instances = {name: 0 for name in CLASS_NAMES}
    for coco in cocos.values():
        for name, count in split_counts(coco)["instances"].items():
            instances[name] += count
    total = sum(instances.values())
    shares = {name: round(count / total, 4) if total else 0.0 for name, count in instances.items()}
    below = sorted(name for name, share in shares.items() if share < floor)
    return CheckOutcome(
        not below, {"instances": instances, "shares": shares, "floor": floor, "below": below}
    )


def _in_several(splits_of: dict[str, set[str]]) -> list[dict]:
    return [
        {"key": key, "splits": sorted(splits)}
        for key, splits in sorted(splits_of.items()) if len(splits) > 1
    ]
