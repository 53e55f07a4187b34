"""Train/val/test assignment that never moves an image as the data grows.

The split of an image is a pure function of its group key (the ``group`` of the labeled image,
else its sha256) and the split fractions: the key is hashed to a number in [0, 1) and the
fractions cut that interval. Adding images therefore never moves an existing one, and every
copy of one source photo (same group) lands in the same split.

A ``fixed_split`` (an imported dataset keeping its published split) wins. Members of a group
without a fixed split follow the group's fixed split when the group has exactly one, so a copy
of a published test photo cannot leak into train; a group whose published splits disagree keeps
them (the leakage check reports it).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from carsdepo_assets.labeling.snapshot import LabeledImage

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST)
_SALT = "carsdepo-split/v1:"


@dataclass(frozen=True)
class SplitFractions:
    """Shares of the split interval; they must be non-negative and add up to 1."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        shares = self.as_dict()
        if any(not math.isfinite(share) or share < 0 for share in shares.values()):
            raise ValueError(f"split fractions must be finite and non-negative, got {shares}")
        if not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"split fractions must add up to 1, got {shares} (sum {sum(shares.values()):g})"
            )

    def as_dict(self) -> dict[str, float]:
        return {TRAIN: self.train, VAL: self.val, TEST: self.test}


DEFAULT_FRACTIONS = SplitFractions()


def beside_pinned_test(
    images: Iterable[LabeledImage], fractions: SplitFractions = DEFAULT_FRACTIONS
) -> SplitFractions:
    """The fractions for the unpinned images: while some images are pinned to the test split (a
    verified test batch), the others go to train and val only (the test share to train), so
    the models are judged on the verified photos alone and every version on the same ones."""
    if fractions.test == 0 or not any(image.fixed_split == TEST for image in images):
        return fractions
    return SplitFractions(fractions.train + fractions.test, fractions.val, 0.0)


def group_key(image: LabeledImage) -> str:
    """What keeps copies together: the image's group, else the image itself."""
    return image.group if image.group else image.sha256


def hash_position(key: str) -> float:
    """A stable, uniform position in [0, 1) for a key (same on every machine and run)."""
    digest = hashlib.sha256((_SALT + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, fractions: SplitFractions = DEFAULT_FRACTIONS) -> str:
    """The split a group key falls into."""
    position = hash_position(key)
    bound = 0.0
    for name, share in fractions.as_dict().items():
        bound += share
        if position < bound:
            return name
    return next(name for name in reversed(SPLITS) if fractions.as_dict()[name] > 0)


def assign_splits(
    images: Iterable[LabeledImage], fractions: SplitFractions = DEFAULT_FRACTIONS
) -> dict[str, str]:
    """sha256 -> split for every image; fixed splits win, groups stay together (see module)."""
    images = list(images)
    unknown = [(i.sha256, i.fixed_split) for i in images if i.fixed_split not in (None, *SPLITS)]
    if unknown:
        raise ValueError(f"unknown fixed_split (expected one of {SPLITS}) on images {unknown}")
    fixed_by_group: dict[str, set[str]] = defaultdict(set)
    for image in images:
        if image.fixed_split:
            fixed_by_group[group_key(image)].add(image.fixed_split)
    assignment: dict[str, str] = {}
    for image in images:
        key = group_key(image)
        published = fixed_by_group.get(key, set())
        if image.fixed_split:
            assignment[image.sha256] = image.fixed_split
        elif len(published) == 1:
            assignment[image.sha256] = next(iter(published))
        else:
            assignment[image.sha256] = split_of(key, fractions)
    return assignment
