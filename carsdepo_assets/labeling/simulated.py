"""Simulated annotators: label a synthetic batch in Label Studio from its ground truth.

The demo and the tests need annotators without a person at the keyboard. This one works like
a slightly careless human. Each box edge lands a few pixels off (Gaussian jitter). A box is
sometimes missed. Some tasks are skipped. A clean panel gets the explicit "no damage" choice.
Each image draws from its own random stream, seeded by ``(seed, sha256)``, so the outcome of
an image does not depend on which other images are in the batch. A task that already has an
annotation is left alone, which makes a re-run a no-op.

A task that carries a model's pre-annotation is *reviewed* instead of labelled from nothing, as
a person would (``review_boxes``): a predicted box that sits on a damage (same label, IoU at
least ``KEEP_IOU``) is accepted as it is; a loose one (IoU at least ``REDRAW_IOU``) is redrawn
over the damage with the usual jitter; one that covers no damage is deleted; a damage no
predicted box found is drawn from nothing (or missed, at the usual rate).

``simulate_annotations`` decides what the annotator does with each image. The demo submits that
to Label Studio (``annotate_simulated``); ``carsdepo check``, which runs without Label Studio,
writes it as the snapshot ``annotations`` would pull back (``simulated_snapshot``). Both read an
image whose boxes were all missed as Label Studio does: the "no damage" choice, a negative.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.labeling.coco_import import ParsedCoco, parse_coco
from carsdepo_assets.labeling.results import annotation_result
from carsdepo_assets.labeling.review import match_boxes, result_boxes
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledBox, LabeledImage
from carsdepo_assets.labeling.tasks import LabelingBackend, match_manifest_rows
from carsdepo_assets.state import StateLayout

GROUND_TRUTH_FILE = "annotations.json"  # written by `carsdepo synth` next to images/
MIN_SIDE_PX = 1.0
KEEP_IOU = 0.7  # a predicted box this close to the damage is accepted as it is
REDRAW_IOU = 0.1  # ... this close, redrawn; below, deleted


@dataclass(frozen=True)
class AnnotatorProfile:
    """How careless the simulated annotator is."""

    jitter_px: float = 2.0  # standard deviation of each box edge's error
    miss_rate: float = 0.05  # chance to overlook a box
    skip_rate: float = 0.05  # chance to skip a task
    seed: int = 0

    def rng(self, sha256: str) -> random.Random:
        return random.Random(f"{self.seed}:{sha256}")


def drawn_box(box: LabeledBox, width: int, height: int, profile: AnnotatorProfile,
              rng: random.Random) -> LabeledBox:
    """``box`` as the annotator draws it: each edge jittered, clipped to the image."""
    x, y, w, h = box.bbox
    x1 = min(max(0.0, x + rng.gauss(0, profile.jitter_px)), width - MIN_SIDE_PX)
    y1 = min(max(0.0, y + rng.gauss(0, profile.jitter_px)), height - MIN_SIDE_PX)
    x2 = min(max(x1 + MIN_SIDE_PX, x + w + rng.gauss(0, profile.jitter_px)), width)
    y2 = min(max(y1 + MIN_SIDE_PX, y + h + rng.gauss(0, profile.jitter_px)), height)
    return LabeledBox(box.label, (x1, y1, x2 - x1, y2 - y1))


def imperfect_boxes(
    truth: Sequence[LabeledBox], width: int, height: int, profile: AnnotatorProfile,
    rng: random.Random,
) -> list[LabeledBox]:
    """The boxes the annotator draws for ``truth``: jittered, clipped, some missed."""
    return [drawn_box(box, width, height, profile, rng) for box in truth
            if rng.random() >= profile.miss_rate]


def review_boxes(
    predicted: Sequence[LabeledBox], truth: Sequence[LabeledBox], width: int, height: int,
    profile: AnnotatorProfile, rng: random.Random,
) -> list[LabeledBox]:
    """The boxes a reviewer submits for a pre-annotated image (the rule in the module)."""
    matches = match_boxes(truth, predicted, REDRAW_IOU)
    kept = [predicted[j] if overlap >= KEEP_IOU else drawn_box(truth[i], width, height,
                                                               profile, rng)
            for i, j, overlap in matches]
    found = {i for i, _, _ in matches}
    missing = [box for i, box in enumerate(truth) if i not in found]
    return kept + imperfect_boxes(missing, width, height, profile, rng)


@dataclass(frozen=True)
class SimulatedAnnotation:
    """What the simulated annotator does with one image: skips it, or draws ``boxes``."""

    sha256: str
    width: int
    height: int
    boxes: tuple[LabeledBox, ...]
    missed_boxes: int
    skipped: bool
    lead_time: float  # seconds the annotator spent, as Label Studio records it
    truth: tuple[LabeledBox, ...] = ()

    def reviewed(self, prediction: dict, profile: AnnotatorProfile) -> tuple[LabeledBox, ...]:
        """The boxes submitted when the task shows ``prediction`` (a Label Studio prediction)."""
        predicted = result_boxes(prediction.get("result") or [], self.width, self.height)
        rng = random.Random(f"{profile.seed}:review:{self.sha256}")
        return tuple(review_boxes(predicted, self.truth, self.width, self.height, profile, rng))

    def labeled_image(self) -> LabeledImage:
        """The image as its annotation reads back from Label Studio: no box drawn is the
        "no damage" choice (``annotation_result``), so it is a negative."""
        return LabeledImage(sha256=self.sha256, width=self.width, height=self.height,
                            boxes=self.boxes, no_damage=not self.boxes)


def simulate_annotations(
    manifest: BatchManifest, truth: ParsedCoco, profile: AnnotatorProfile = AnnotatorProfile(),
) -> dict[str, SimulatedAnnotation]:
    """What the annotator does with each image of the batch that has ground truth, by sha256."""
    rows = match_manifest_rows(manifest, [image.file_name for image in truth.images])
    batch_shas = set(manifest.image_hashes())
    annotations = {}
    for image in truth.images:
        row = rows.get(image.file_name)
        if row is None or row.sha256 not in batch_shas:
            continue
        rng = profile.rng(row.sha256)
        if rng.random() < profile.skip_rate:
            annotations[row.sha256] = SimulatedAnnotation(
                row.sha256, image.width, image.height, (), 0, skipped=True,
                lead_time=rng.uniform(2, 10))
            continue
        boxes = imperfect_boxes(image.boxes, image.width, image.height, profile, rng)
        annotations[row.sha256] = SimulatedAnnotation(
            row.sha256, image.width, image.height, tuple(boxes), len(image.boxes) - len(boxes),
            skipped=False, lead_time=rng.uniform(5, 60), truth=tuple(image.boxes))
    return annotations


def simulated_snapshot(
    manifest: BatchManifest, truth: ParsedCoco, profile: AnnotatorProfile = AnnotatorProfile(),
) -> AnnotationSnapshot:
    """The snapshot ``annotations`` would pull from Label Studio after ``annotate_simulated``,
    without a Label Studio (``carsdepo check``)."""
    annotations = simulate_annotations(manifest, truth, profile)
    return AnnotationSnapshot(images=[annotations[sha].labeled_image()
                                      for sha in sorted(annotations)
                                      if not annotations[sha].skipped])


@dataclass
class SimulationReport:
    batch: str
    submitted: int = 0
    skipped: int = 0
    negatives: int = 0
    boxes: int = 0
    missed_boxes: int = 0
    reviewed: int = 0  # tasks whose pre-annotation was reviewed rather than labelled afresh
    already_annotated: int = 0
    without_ground_truth: int = 0  # tasks of the batch whose image the COCO file lacks

    def summary(self) -> dict:
        return dict(vars(self))


def annotate_simulated(
    backend: LabelingBackend, manifest: BatchManifest, truth: ParsedCoco,
    profile: AnnotatorProfile = AnnotatorProfile(),
) -> SimulationReport:
    """Submit one simulated annotation per unannotated task of the batch: a review of its
    newest pre-annotation when it has one, else labels from nothing."""
    annotations = simulate_annotations(manifest, truth, profile)
    batch_shas = set(manifest.image_hashes())
    tasks = sorted((task for task in backend.list_tasks() if task.sha256 in batch_shas),
                   key=lambda task: task.sha256)
    if not tasks and batch_shas:
        raise LookupError(
            f"batch {manifest.batch!r} has no tasks in Label Studio yet: materialize "
            f"label_studio_tasks for partition {manifest.batch!r} first"
        )
    report = SimulationReport(batch=manifest.batch)
    for task in tasks:
        if task.annotations:
            report.already_annotated += 1
            continue
        annotation = annotations.get(task.sha256)
        if annotation is None:
            report.without_ground_truth += 1
            continue
        if annotation.skipped:
            backend.submit_annotation(task.id, [], skipped=True, lead_time=annotation.lead_time)
            report.skipped += 1
            continue
        boxes = annotation.boxes
        if task.predictions:
            boxes = annotation.reviewed(task.predictions[-1], profile)
            report.reviewed += 1
        else:
            report.missed_boxes += annotation.missed_boxes
        backend.submit_annotation(
            task.id, annotation_result(boxes, annotation.width, annotation.height),
            lead_time=annotation.lead_time,
        )
        report.submitted += 1
        report.negatives += not boxes
        report.boxes += len(boxes)
    return report


def annotate_batch_simulated(
    backend: LabelingBackend, layout: StateLayout, batch: str, synth_dir: Path,
    profile: AnnotatorProfile = AnnotatorProfile(),
) -> SimulationReport:
    """``carsdepo annotate-simulated``: the batch's manifest + ``synth_dir/annotations.json``."""
    truth = parse_coco(Path(synth_dir) / GROUND_TRUTH_FILE)
    return annotate_simulated(backend, load_manifest(layout, batch), truth, profile)
