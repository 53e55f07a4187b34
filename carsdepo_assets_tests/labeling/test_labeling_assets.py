"""The labeling assets in real in-process Dagster runs against the real Label Studio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import requests
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from carsdepo_assets.assets.labeling import annotations, label_studio_project, label_studio_tasks
from carsdepo_assets.checks.labeling import annotated_images_are_stored, few_annotations_rejected
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.labeling.history import latest_snapshot_path
from carsdepo_assets.labeling.prelabels import ImageToLabel, Prelabels
from carsdepo_assets.labeling.results import box_results, no_damage_result
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledBox
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.resources.label_studio import LabelStudioResource
from carsdepo_assets.resources.prelabeler import Prelabeler
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import LabelStudioServer
from carsdepo_assets_tests.labeling.batches import HEIGHT, WIDTH, synthetic_batch

pytestmark = pytest.mark.label_studio
BATCH = "b1"


class FixedAnswersPrelabeler(Prelabeler):
    """A stand-in for the champion model: a sure dent on the first image, an unsure scratch
    on the second, "None" on the third, no answer for the rest."""

    model_version: str = "test-model-1"

    def predictions_for(self, images: Sequence[ImageToLabel]) -> Prelabels:
        first, second, third = sorted(image.sha256 for image in images)[:3]
        return Prelabels(self.model_version, {
            first: [Detection("dent", 0.97, (10, 10, 60, 50))],
            second: [Detection("scratch", 0.52, (5, 5, 80, 12))],
            third: [],
        })


def run(assets: list, layout: StateLayout, label_studio: LabelStudioResource,
        partition: str | None = None, prelabeler: Prelabeler | None = None,
        checks: dict | None = None) -> dict:
    """Materialize ``assets`` (and their checks) in one run; returns the metadata of the last
    asset, and fills ``checks`` with each check's evaluation."""
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [BATCH])
    result = materialize(
        assets, instance=instance, partition_key=partition,
        resources={"carsdepo_home": CarsdepoHome(path=str(layout.root)),
                   "label_studio": label_studio, "prelabeler": prelabeler or Prelabeler()},
    )
    assert result.success
    if checks is not None:
        checks.update({e.check_name: e for e in result.get_asset_check_evaluations()})
    events = result.get_asset_materialization_events()
    return {key: value.value for key, value in events[-1].materialization.metadata.items()}


def test_tasks_asset_imports_the_batch_once_however_often_it_runs(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    synthetic_batch(carsdepo_home, tmp_path / "synth", BATCH, duplicate=True)
    project = run([label_studio_project], carsdepo_home, label_studio)
    first = run([label_studio_tasks], carsdepo_home, label_studio, partition=BATCH)
    second = run([label_studio_tasks], carsdepo_home, label_studio, partition=BATCH)

    assert project["created"] is True and project["project_url"].endswith("/data")
    assert (first["images"], first["tasks_created"], first["tasks_existing"]) == (4, 4, 0)
    assert (second["tasks_created"], second["tasks_existing"]) == (0, 4)
    assert first["pre_annotations"] == "none (no model yet)"
    assert len(label_studio.list_tasks()) == 4


def test_tasks_asset_adds_model_pre_annotations_and_serves_the_least_confident_first(
    label_studio: LabelStudioResource, label_studio_server: LabelStudioServer,
    carsdepo_home: StateLayout, tmp_path: Path,
):
    manifest, _ = synthetic_batch(carsdepo_home, tmp_path / "synth", BATCH)
    prelabeler = FixedAnswersPrelabeler()
    first = run([label_studio_tasks], carsdepo_home, label_studio, BATCH, prelabeler)
    again = run([label_studio_tasks], carsdepo_home, label_studio, BATCH, prelabeler)

    assert (first["pre_annotations"], first["pre_annotations_added"]) == ("test-model-1", 3)
    assert again["pre_annotations_added"] == 0
    by_sha = {task.sha256: task for task in label_studio.list_tasks()}
    unsure = sorted(manifest.image_hashes())[1]
    assert sum(task.prediction_versions == ("test-model-1",) for task in by_sha.values()) == 3
    project_id = label_studio.project_id()
    next_task = requests.get(
        f"{label_studio_server.url}/api/projects/{project_id}/next/", timeout=30,
        headers={"Authorization": f"Token {label_studio_server.token}"},
    ).json()
    assert next_task["id"] == by_sha[unsure].id


def test_annotations_asset_writes_a_snapshot_and_counts_what_it_left_out(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    synthetic_batch(carsdepo_home, tmp_path / "synth", BATCH, n_images=5)
    run([label_studio_tasks], carsdepo_home, label_studio, partition=BATCH)
    tasks = sorted(label_studio.list_tasks(), key=lambda task: task.id)
    dent = box_results([LabeledBox("dent", (20, 30, 40, 50))], WIDTH, HEIGHT)
    outside = box_results([LabeledBox("scratch", (WIDTH + 5, 10, 10, 10))], WIDTH, HEIGHT)
    unknown = [{**dent[0], "id": "u1", "value": {**dent[0]["value"],
                                                 "rectanglelabels": ["rust"]}}]
    rotated = [{**dent[0], "id": "r1", "value": {**dent[0]["value"], "rotation": 30}}]
    label_studio.submit_annotation(tasks[0].id, dent + unknown + outside)
    label_studio.submit_annotation(tasks[1].id, no_damage_result())
    label_studio.submit_annotation(tasks[2].id, [], skipped=True)
    label_studio.submit_annotation(tasks[3].id, rotated, imported=True)
    label_studio.submit_annotation(tasks[4].id, unknown)

    checks: dict = {}
    metadata = run([annotations, annotated_images_are_stored, few_annotations_rejected],
                   carsdepo_home, label_studio, checks=checks)

    snapshot = AnnotationSnapshot.load(latest_snapshot_path(carsdepo_home.annotations))
    assert metadata["version"] == snapshot.version and metadata["images"] == 3
    assert (metadata["boxes_dent"], metadata["boxes_scratch"], metadata["negatives"]) == (2, 0, 1)
    assert (metadata["rotated_boxes"], metadata["imported_images"]) == (1, 1)
    assert metadata["rejected"] == 5
    table = metadata["rejected_by_reason"]
    for row in ("| no_valid_boxes | 1 |", "| outside_image | 1 |", "| skipped | 1 |",
                "| unknown_label | 2 |"):
        assert row in table
    assert {image.task_id for image in snapshot.images} == {tasks[0].id, tasks[1].id, tasks[3].id}
    assert checks["annotated_images_are_stored"].passed
    rejected_check = checks["few_annotations_rejected"]
    assert not rejected_check.passed and rejected_check.severity == AssetCheckSeverity.WARN
