"""Split assignment: stable as data grows, group-aware, published splits respected."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict

import pytest

from carsdepo_assets.datasets.splits import SPLITS, SplitFractions, assign_splits, split_of
from carsdepo_assets.labeling.snapshot import LabeledImage
from carsdepo_assets.state import PROJECT_ROOT

LENSOR = PROJECT_ROOT.parent / "shared" / "data" / "lensor_car_damage"


def labeled(name: str, group: str | None = None, fixed_split: str | None = None) -> LabeledImage:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return LabeledImage(sha, 640, 480, (), no_damage=True, group=group, fixed_split=fixed_split)


def test_no_existing_image_changes_split_when_data_grows():
    first = [labeled(f"photo-{n}") for n in range(300)]
    before = assign_splits(first)
    after = assign_splits(first + [labeled(f"photo-{n}") for n in range(300, 1500)])
    assert {sha: after[sha] for sha in before} == before
    shares = Counter(after.values())
    assert shares["train"] / 1500 == pytest.approx(0.7, abs=0.05)
    assert shares["val"] / 1500 == pytest.approx(0.15, abs=0.04)


def test_copies_of_one_source_photo_land_in_one_split():
    images = [labeled(f"copy-{group}-{n}", group=f"source-{group}") for group in range(60)
              for n in range(3)]
    assignment = assign_splits(images)
    splits_per_group = defaultdict(set)
    for image in images:
        splits_per_group[image.group].add(assignment[image.sha256])
    assert all(len(splits) == 1 for splits in splits_per_group.values())
    assert {split for splits in splits_per_group.values() for split in splits} == set(SPLITS)


def test_fixed_split_wins_and_unpinned_copies_follow_their_group():
    pinned = [labeled(f"published-{n}", group=f"g{n}", fixed_split="test") for n in range(40)]
    copies = [labeled(f"augmented-{n}", group=f"g{n}") for n in range(40)]
    assignment = assign_splits(pinned + copies)
    assert set(assignment.values()) == {"test"}


def test_a_group_with_conflicting_published_splits_keeps_them():
    images = [labeled("a", group="g", fixed_split="train"),
              labeled("b", group="g", fixed_split="val")]
    assert sorted(assign_splits(images).values()) == ["train", "val"]


def test_a_zero_fraction_split_receives_nothing():
    fractions = SplitFractions(train=0.8, val=0.2, test=0.0)
    assert {split_of(f"key-{n}", fractions) for n in range(500)} == {"train", "val"}


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.2, 0.2), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)]
)
def test_fractions_that_are_not_shares_of_one_are_refused(fractions):
    with pytest.raises(ValueError, match="split fractions"):
        SplitFractions(*fractions)


def test_an_unknown_fixed_split_is_refused_naming_the_image():
    image = labeled("odd", fixed_split="holdout")
    with pytest.raises(ValueError, match=image.sha256):
        assign_splits([image])


@pytest.mark.skipif(not LENSOR.is_dir(), reason=f"the lensor data is not at {LENSOR}")
def test_lensor_source_photos_shared_by_train_and_val_land_in_one_split():
    """The real data's README: augmented copies share a source photo (before ``.rf.``)."""
    images, sources_by_published_split = [], defaultdict(set)
    for published in ("train", "val"):
        coco = json.loads((LENSOR / "annotations" / f"instances_{published}.json").read_text())
        for entry in coco["images"]:
            source = entry["file_name"].split(".rf.")[0]
            sources_by_published_split[published].add(source)
            images.append(labeled(entry["file_name"], group=source))
    assignment = assign_splits(images)
    splits_of_source = defaultdict(set)
    for image in images:
        splits_of_source[image.group].add(assignment[image.sha256])
    leaking = sources_by_published_split["train"] & sources_by_published_split["val"]
    assert len(leaking) == 4
    assert all(len(splits) == 1 for splits in splits_of_source.values())
    train_sources = sum(splits == {"train"} for splits in splits_of_source.values())
    assert train_sources / len(splits_of_source) == pytest.approx(0.7, abs=0.06)


def test_photos_beside_a_pinned_test_batch_split_train_and_val_only() -> None:
    from carsdepo_assets.datasets.splits import beside_pinned_test

    pinned = LabeledImage(sha256="a" * 64, width=8, height=8, boxes=(), fixed_split="test")
    free = LabeledImage(sha256="b" * 64, width=8, height=8, boxes=())

    fractions = beside_pinned_test([pinned, free], SplitFractions(0.7, 0.15, 0.15))

    assert (fractions.train, fractions.val, fractions.test) == pytest.approx((0.85, 0.15, 0.0))
    assert beside_pinned_test([free], SplitFractions(0.7, 0.15, 0.15)).test == 0.15
