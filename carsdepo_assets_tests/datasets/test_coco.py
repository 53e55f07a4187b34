"""Building curated COCO datasets from a snapshot and real images in a temporary store."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from pycocotools.coco import COCO

from carsdepo_assets.datasets import (
    build_dataset,
    latest_dataset,
    load_dataset,
)
from carsdepo_assets.datasets.coco import (
    DUPLICATE_ENTRY,
    MISSING_FROM_STORE,
    NOT_LABELED,
    SIZE_MISMATCH,
    UNKNOWN_LABEL,
)
from carsdepo_assets.labeling import history
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledBox
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, DENT, SCRATCH


@pytest.fixture
def snapshot(store_image) -> AnnotationSnapshot:
    """Twelve damaged images (scratches and dents) and four clean ones."""
    damaged = [
        store_image(n, ((SCRATCH, 4, 5, 30, 3.5), (DENT, 50.25, 10, 20, 24)) if n % 2 else
                    ((DENT, 10, 12, 40, 30),), ext="jpg" if n % 3 else "png")
        for n in range(12)
    ]
    clean = [store_image(100 + n) for n in range(4)]
    return AnnotationSnapshot(images=damaged + clean)


def all_images(dataset) -> dict[str, tuple[str, dict]]:
    """sha256 -> (split, COCO image entry) over every split."""
    return {
        image["sha256"]: (split, image)
        for split, coco in dataset.cocos().items() for image in coco["images"]
    }


def test_coco_splits_load_in_pycocotools_with_the_snapshot_boxes(snapshot, carsdepo_home):
    dataset = build_dataset(snapshot, carsdepo_home)
    expected = {image.sha256: image for image in snapshot.images}
    seen = set()
    for split in ("train", "val", "test"):
        coco_json, image_root = dataset.split(split)
        coco = COCO(str(coco_json))
        assert coco.getCatIds() == [CATEGORY_ID_BY_NAME[SCRATCH], CATEGORY_ID_BY_NAME[DENT]]
        for image_id, entry in coco.imgs.items():
            assert (image_root / entry["file_name"]).is_file()
            labels = expected[entry["sha256"]]
            assert (entry["width"], entry["height"]) == (labels.width, labels.height)
            boxes = sorted(
                (coco.cats[a["category_id"]]["name"], *a["bbox"])
                for a in coco.imgToAnns[image_id]
            )
            assert boxes == sorted((box.label, *box.bbox) for box in labels.boxes)
            seen.add(entry["sha256"])
    assert seen == set(expected)
    assert dataset.source_snapshot == snapshot.version


def test_no_damage_images_are_kept_as_negatives(snapshot, carsdepo_home):
    dataset = build_dataset(snapshot, carsdepo_home)
    negatives = {image.sha256 for image in snapshot.images if image.no_damage}
    for split, coco in dataset.cocos().items():
        annotated = {a["image_id"] for a in coco["annotations"]}
        kept = {image["sha256"] for image in coco["images"] if image["id"] not in annotated}
        assert kept <= negatives
        assert dataset.counts[split]["negatives"] == len(kept)
    assert sum(counts["negatives"] for counts in dataset.counts.values()) == len(negatives)


def test_unusable_images_are_reported_with_their_reason_and_the_rest_is_built(
    snapshot, store_image, carsdepo_home
):
    missing = replace(snapshot.images[0], sha256="0" * 64)
    resized = replace(store_image(200), width=120)
    unlabeled = store_image(201, no_damage=False)
    odd_label = store_image(202, (("broken", 1, 1, 5, 5),))
    duplicate = replace(snapshot.images[1], boxes=())  # an earlier entry of the same image
    images = [duplicate, *snapshot.images, missing, resized, unlabeled, odd_label]
    clean = build_dataset(snapshot, carsdepo_home)
    dataset = build_dataset(AnnotationSnapshot(images=images), carsdepo_home)
    assert dataset.version == clean.version  # the same usable images, the same data
    reasons = {(item.sha256, item.reason) for item in dataset.skipped}
    assert reasons == {
        (missing.sha256, MISSING_FROM_STORE), (resized.sha256, SIZE_MISMATCH),
        (unlabeled.sha256, NOT_LABELED), (odd_label.sha256, UNKNOWN_LABEL),
        (duplicate.sha256, DUPLICATE_ENTRY),
    }
    assert load_dataset(dataset.root).missing_images == [missing.sha256]
    assert set(all_images(dataset)) == {image.sha256 for image in snapshot.images}


def test_same_labels_same_version_and_a_rebuild_writes_nothing(snapshot, carsdepo_home):
    first = build_dataset(snapshot, carsdepo_home)
    written = {path: path.stat().st_mtime_ns for path in first.root.iterdir()}
    assert build_dataset(snapshot, carsdepo_home) == first
    assert {path: path.stat().st_mtime_ns for path in first.root.iterdir()} == written
    shuffled = AnnotationSnapshot(images=[
        replace(image, task_id=7, boxes=image.boxes[::-1]) for image in snapshot.images[::-1]
    ])
    assert build_dataset(shuffled, carsdepo_home).version == first.version
    assert {path.name for path in carsdepo_home.datasets.iterdir()} == {
        "latest.json", first.version,
    }


def test_a_changed_box_or_a_new_image_gives_a_new_version(snapshot, store_image, carsdepo_home):
    first = build_dataset(snapshot, carsdepo_home)
    image = snapshot.images[0]
    moved = replace(image, boxes=(LabeledBox(image.boxes[0].label, (11, 12, 40, 30)),))
    changed = build_dataset(AnnotationSnapshot([moved, *snapshot.images[1:]]), carsdepo_home)
    grown = build_dataset(
        AnnotationSnapshot([*snapshot.images, store_image(300)]), carsdepo_home
    )
    assert len({first.version, changed.version, grown.version}) == 3
    assert load_dataset(first.root).version == first.version
    assert latest_dataset(carsdepo_home).version == grown.version


def test_growing_the_data_moves_no_image_to_another_split(snapshot, store_image, carsdepo_home):
    first = build_dataset(snapshot, carsdepo_home)
    before = {sha: split for sha, (split, _) in all_images(first).items()}
    more = [store_image(400 + n, ((SCRATCH, 1, 1, 9, 9),)) for n in range(30)]
    grown = build_dataset(AnnotationSnapshot([*more, *snapshot.images]), carsdepo_home)
    after = {sha: split for sha, (split, _) in all_images(grown).items()}
    assert {sha: after[sha] for sha in before} == before


def test_copies_of_a_photo_share_a_split_and_carry_their_group(store_image, carsdepo_home):
    copies = [store_image(500 + n, group=f"photo-{n // 4}") for n in range(24)]
    dataset = build_dataset(AnnotationSnapshot(copies), carsdepo_home)
    split_of_group = {}
    for split, entry in all_images(dataset).values():
        assert split_of_group.setdefault(entry["group"], split) == split
    assert len(split_of_group) == 6


def test_a_published_split_is_kept(store_image, carsdepo_home):
    published = [store_image(600 + n, fixed_split="test", source="imported") for n in range(10)]
    dataset = build_dataset(AnnotationSnapshot(published), carsdepo_home)
    assert dataset.counts["test"]["images"] == 10


def test_without_a_pointer_the_latest_snapshot_is_the_one_written_last(
    carsdepo_home, store_image
):
    assert history.latest_snapshot_path(carsdepo_home.annotations) is None
    older = AnnotationSnapshot([store_image(1)]).save(carsdepo_home.annotations)
    newer = AnnotationSnapshot([store_image(2)]).save(carsdepo_home.annotations)
    os.utime(older, ns=(1, 1))
    assert history.latest_snapshot_path(carsdepo_home.annotations) == newer
    AnnotationSnapshot.load(older).save(carsdepo_home.annotations)  # saved again
    assert history.latest_snapshot_path(carsdepo_home.annotations) == older


def test_the_snapshot_the_annotations_run_points_at_wins(carsdepo_home, store_image):
    pointed = history.write_snapshot(
        AnnotationSnapshot([store_image(1)]), carsdepo_home.annotations
    )
    newer = AnnotationSnapshot([store_image(2)]).save(carsdepo_home.annotations)
    os.utime(pointed, ns=(1, 1))
    assert newer != pointed
    assert history.latest_snapshot_path(carsdepo_home.annotations) == pointed


def test_a_folder_without_dataset_json_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset(tmp_path)


def test_dataset_json_names_the_store_and_the_split_files(snapshot, carsdepo_home):
    dataset = build_dataset(snapshot, carsdepo_home)
    manifest = json.loads((dataset.root / "dataset.json").read_text())
    assert manifest["image_root"] == str(carsdepo_home.images.resolve())
    assert manifest["splits"] == {name: f"{name}.json" for name in ("train", "val", "test")}
    assert sum(counts["images"] for counts in manifest["counts"].values()) == 16
    assert not [path for path in carsdepo_home.datasets.iterdir() if path.name.startswith(".")]


def test_a_simulated_crash_before_the_rename_leaves_no_dataset_behind(
    snapshot, carsdepo_home, monkeypatch
):
    """A crash cannot be caused on cue, so the rename is made to fail like one."""

    def crash(source, target):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr("carsdepo_assets.datasets.coco.os.rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        build_dataset(snapshot, carsdepo_home)
    assert list(carsdepo_home.datasets.iterdir()) == []
    assert latest_dataset(carsdepo_home) is None
