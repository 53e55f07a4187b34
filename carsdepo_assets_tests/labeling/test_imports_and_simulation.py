"""Labelled data entering Label Studio without a person: the real lensor test split
(import-coco) and simulated annotators on a synthetic batch, both pulled back as snapshots."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from carsdepo_assets.datasets import build_dataset
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.labeling.coco_import import import_coco_batch, parse_coco
from carsdepo_assets.labeling.results import convert_tasks
from carsdepo_assets.labeling.simulated import (
    AnnotatorProfile,
    annotate_batch_simulated,
    annotate_simulated,
    simulate_annotations,
    simulated_snapshot,
)
from carsdepo_assets.labeling.tasks import batch_task_data
from carsdepo_assets.resources.label_studio import LabelStudioResource
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.labeling.batches import LENSOR, requires_lensor, synthetic_batch

pytestmark = pytest.mark.label_studio
LENSOR_TEST = LENSOR / "annotations" / "instances_test.json"


def clip(bbox: tuple[float, ...], width: int, height: int) -> tuple[float, ...]:
    """A COCO box cut to the image (a few source boxes reach half a pixel beyond it)."""
    x, y, w, h = bbox
    x1, y1, x2, y2 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    return tuple(round(v, 6) for v in (x1, y1, x2 - x1, y2 - y1))


@requires_lensor
def test_importing_the_lensor_test_split_keeps_every_box_in_its_own_split(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout
):
    ingest_batch(LENSOR / "images" / "test", "lensor-test", carsdepo_home)
    report = import_coco_batch(label_studio, carsdepo_home, "lensor-test", LENSOR_TEST,
                               keep_split="test")
    again = import_coco_batch(label_studio, carsdepo_home, "lensor-test", LENSOR_TEST,
                              keep_split="test")

    parsed = parse_coco(LENSOR_TEST)
    excluded = len(parsed.excluded)
    assert report.tasks_created == report.annotations_created == 76 - excluded
    assert report.boxes_by_class == {"scratch": 117, "dent": 37}
    assert report.dropped_by_category == {"moderate-broken": 1, "severe-broken": 4}
    assert not report.not_stored and not report.size_mismatch
    assert (again.tasks_created, again.annotations_created, again.tasks_updated) == (0, 0, 0)

    snapshot = convert_tasks(label_studio.fetch_completed_annotations()).snapshot
    assert snapshot.rejected == [] and len(snapshot.images) == 76 - excluded
    assert Counter(box.label for image in snapshot.images for box in image.boxes) == {
        "scratch": 117, "dent": 37}
    assert {image.fixed_split for image in snapshot.images} == {"test"}
    assert {image.source for image in snapshot.images} == {"imported"}
    assert sum(image.no_damage for image in snapshot.images) == parsed.negatives == 1
    source_boxes = [(box.label, clip(box.bbox, image.width, image.height))
                    for image in parsed.images for box in image.boxes]
    assert snapshot.clipped_boxes == sum(box.bbox != clip(box.bbox, image.width, image.height)
                                         for image in parsed.images for box in image.boxes)
    pulled = [(box.label, clip(box.bbox, image.width, image.height))
              for image in snapshot.images for box in image.boxes]
    assert sorted(pulled) == sorted(source_boxes)
    assert all(image.group and ".rf." not in image.group for image in snapshot.images)


def test_import_adds_its_group_and_split_to_tasks_created_earlier(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    manifest, synth = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=3)
    label_studio.import_tasks(
        batch_task_data(manifest, carsdepo_home.images,
                        label_studio.document_root(carsdepo_home.images)),
        carsdepo_home.images,
    )
    report = import_coco_batch(label_studio, carsdepo_home, "b1", synth.annotations_path,
                               keep_split="val")

    assert (report.tasks_created, report.tasks_existing, report.tasks_updated) == (0, 3, 3)
    assert {(task.data["source"], task.data["split"], task.data["group"][:6])
            for task in label_studio.list_tasks()} == {("imported", "val", "panel_")}


def test_simulated_annotators_label_a_synthetic_batch_once(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    manifest, synth = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=12,
                                      seed=4, clean_share=0.3)
    label_studio.import_tasks(
        batch_task_data(manifest, carsdepo_home.images,
                        label_studio.document_root(carsdepo_home.images)),
        carsdepo_home.images,
    )
    profile = AnnotatorProfile(jitter_px=1.5, miss_rate=0.1, skip_rate=0.2, seed=4)
    report = annotate_batch_simulated(label_studio, carsdepo_home, "b1", synth.out_dir, profile)
    again = annotate_batch_simulated(label_studio, carsdepo_home, "b1", synth.out_dir, profile)

    assert report.submitted + report.skipped == 12 and report.skipped > 0
    assert again.already_annotated == 12 and again.submitted == again.skipped == 0
    conversion = convert_tasks(label_studio.fetch_completed_annotations())
    snapshot = conversion.snapshot
    assert len(snapshot.images) == report.submitted
    assert conversion.rejected_by_reason == {"skipped": report.skipped}
    assert sum(image.no_damage for image in snapshot.images) == report.negatives
    assert sum(len(image.boxes) for image in snapshot.images) == report.boxes
    assert all(image.source == "label_studio" for image in snapshot.images)


def test_simulated_annotators_need_the_batch_tasks_first(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    _, synth = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=1)
    label_studio.ensure_project(carsdepo_home.images)
    with pytest.raises(LookupError, match="materialize label_studio_tasks for partition 'b1'"):
        annotate_batch_simulated(label_studio, carsdepo_home, "b1", synth.out_dir)


def test_the_demo_and_carsdepo_check_build_the_same_dataset_from_the_same_annotations(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    """The demo's path (simulated annotators in Label Studio, pulled back) and ``carsdepo
    check``'s (the same annotators, no Label Studio) agree, also on images whose boxes were all
    missed: both make them "no damage" negatives."""
    manifest, synth = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=12,
                                      seed=5, clean_share=0.25)
    truth = parse_coco(synth.annotations_path)
    profile = AnnotatorProfile(miss_rate=0.6, skip_rate=0.15, seed=2)
    planned = simulate_annotations(manifest, truth, profile).values()
    assert any(not a.skipped and not a.boxes and a.missed_boxes for a in planned)  # the case
    label_studio.import_tasks(
        batch_task_data(manifest, carsdepo_home.images,
                        label_studio.document_root(carsdepo_home.images)),
        carsdepo_home.images,
    )
    annotate_simulated(label_studio, manifest, truth, profile)

    demo = build_dataset(convert_tasks(label_studio.fetch_completed_annotations()).snapshot,
                         carsdepo_home)
    check = build_dataset(simulated_snapshot(manifest, truth, profile), carsdepo_home)

    assert not demo.skipped and not check.skipped
    assert demo.counts == check.counts
    assert coco_labels(demo) == coco_labels(check)


def coco_labels(dataset) -> dict[str, list[tuple]]:
    """Per split: each image's file and its boxes (to a micro-pixel: Label Studio keeps
    percentages) in order."""
    labels = {}
    for split, coco in dataset.cocos().items():
        boxes = {image["id"]: [] for image in coco["images"]}
        for annotation in coco["annotations"]:
            boxes[annotation["image_id"]].append(
                (annotation["category_id"], tuple(round(v, 6) for v in annotation["bbox"])))
        labels[split] = sorted((image["file_name"], tuple(sorted(boxes[image["id"]])))
                               for image in coco["images"])
    return labels


def test_verified_test_labels_live_in_their_own_project_and_still_reach_the_dataset(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    synthetic_batch(carsdepo_home, tmp_path / "synth", "verified", n_images=4)

    verified = label_studio.for_split("test")
    report = import_coco_batch(verified, carsdepo_home, "verified",
                               tmp_path / "synth" / "annotations.json",
                               keep_split="test")

    assert verified.project_title != label_studio.project_title
    assert report.annotations_created == 4
    assert label_studio.list_tasks() == []  # nothing an annotator of new photos could edit
    snapshot = convert_tasks(label_studio.fetch_completed_annotations()).snapshot
    assert len(snapshot.images) == 4 and {i.fixed_split for i in snapshot.images} == {"test"}
