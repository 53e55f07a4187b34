"""``batch_predictions``: the champion over a batch's stored images, in-process through Dagster,
and the domain function's guarantees (every image accounted for, atomic file)."""

from __future__ import annotations

import json

import pytest
import torch
from dagster import DagsterInstance, materialize

from carsdepo_assets.assets.inference import batch_predictions
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.prediction.batch import predict_batch, prediction_path, read_predictions
from carsdepo_assets.prediction.inference_log import BATCH, InferenceLog
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.pyfunc import load_registered_detector
from carsdepo_assets.prediction.runtime import prepare_inference_process
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import CLASS_NAMES, NONE_ANSWER
from carsdepo_assets_tests.prediction.conftest import BATCH as LOT
from carsdepo_assets_tests.prediction.conftest import HEIGHT, WIDTH, well_formed


def materialize_batch(layout: StateLayout, threshold: float | None = None):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [LOT])
    return materialize(
        [batch_predictions],
        partition_key=LOT,
        instance=instance,
        resources={"carsdepo_home": CarsdepoHome(path=str(layout.root)),
                   "model_registry": ModelRegistry()},
        run_config={"ops": {"batch_predictions": {"config": {"threshold": threshold}}}},
        raise_on_error=False,
    )


@pytest.mark.slow
def test_batch_predictions_answers_every_stored_image_and_records_each_answer(
    carsdepo_home: StateLayout, champion: ModelRef, batch: BatchManifest
) -> None:
    result = materialize_batch(carsdepo_home, threshold=0.0)

    assert result.success
    rows = list(read_predictions(prediction_path(carsdepo_home, LOT)))
    assert [row["sha256"] for row in rows] == batch.image_hashes()
    assert all(well_formed(row["damage"]) for row in rows)  # threshold 0: every candidate
    assert {(row["width"], row["height"]) for row in rows} == {(WIDTH, HEIGHT)}
    assert {(row["model_version"], row["threshold"]) for row in rows} == {("1", 0.0)}
    metadata = result.asset_materializations_for_node("batch_predictions")[0].metadata
    assert metadata["images"].value == len(rows) == metadata["damaged"].value
    assert metadata["share_damaged"].value == 1.0
    per_class = {name: sum(d["label"] == name for row in rows for d in row["damage"])
                 for name in CLASS_NAMES}
    assert {name: metadata[f"detections_{name}"].value for name in CLASS_NAMES} == per_class
    assert "data:image/png;base64," in metadata["score_histogram"].value
    logged = list(InferenceLog(carsdepo_home.inference_log).read())
    assert [(r.source, r.batch, r.image_sha256, r.model_version) for r in logged] == [
        (BATCH, LOT, row["sha256"], "1") for row in rows]
    assert [r.result for r in logged] == [row["damage"] for row in rows]


def test_batch_predictions_with_an_empty_registry_fails_saying_so(
    empty_registry: StateLayout,
) -> None:
    result = materialize_batch(empty_registry)

    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert (f"batch {LOT}: no registered model 'carsdepo-damage-detector': the registry is "
            "empty: train one first") in failure


@pytest.mark.slow
def test_image_missing_from_the_store_gets_an_error_row_and_the_others_an_answer(
    carsdepo_home: StateLayout, champion: ModelRef, batch: BatchManifest
) -> None:
    lost, *kept = batch.image_hashes()
    ImageStore(carsdepo_home.images).path_for(lost).unlink()
    detector = load_registered_detector(champion.uri)

    summary = predict_batch(carsdepo_home, LOT, detector, champion, threshold=1.0, chunk_size=4)

    rows = list(read_predictions(summary.path))
    assert rows[0]["sha256"] == lost
    assert rows[0]["error"].startswith(f"cannot read image {lost}: image {lost} is not in the "
                                       "image store")
    assert [row["damage"] for row in rows[1:]] == [NONE_ANSWER] * len(kept)  # threshold 1
    assert (summary.images, summary.errors, summary.none, summary.damaged) == (
        len(rows), 1, len(kept), 0)


class _CrashAfterFirstChunk:
    """Wraps the real detector; the second ``predict`` call raises as a killed process would."""

    def __init__(self, detector):
        self.detector, self.config, self.calls = detector, detector.config, 0

    def predict(self, images):
        self.calls += 1
        if self.calls > 1:
            raise KeyboardInterrupt("simulated crash")
        return self.detector.predict(images)


@pytest.mark.slow
def test_simulated_crash_mid_batch_leaves_the_previous_predictions_file_whole(
    carsdepo_home: StateLayout, champion: ModelRef, batch: BatchManifest
) -> None:
    detector = load_registered_detector(champion.uri)
    previous = predict_batch(carsdepo_home, LOT, detector, champion, threshold=1.0).path
    before = previous.read_bytes()

    with pytest.raises(KeyboardInterrupt):
        predict_batch(carsdepo_home, LOT, _CrashAfterFirstChunk(detector), champion,
                      threshold=0.0, chunk_size=2)

    assert previous.read_bytes() == before
    assert [p.name for p in carsdepo_home.predictions.iterdir()] == [previous.name]
    assert all(json.loads(line)["damage"] == NONE_ANSWER for line in before.splitlines())


@pytest.mark.slow
def test_batched_and_single_image_forward_passes_give_identical_predictions(
    carsdepo_home: StateLayout, champion: ModelRef, batch: BatchManifest
) -> None:
    """The chunk size only bounds memory: the answers, the best scores and the boxes are the
    same whether the model sees the images one at a time or eight at a time."""
    detector = load_registered_detector(champion.uri)

    def answers(chunk_size: int) -> list[tuple]:
        summary = predict_batch(carsdepo_home, LOT, detector, champion, threshold=0.0,
                                chunk_size=chunk_size)
        return [(row["sha256"], row["damage"], row["max_score"])
                for row in read_predictions(summary.path)]

    one_at_a_time = answers(1)

    assert answers(8) == one_at_a_time
    assert all(well_formed(damage) for _, damage, _ in one_at_a_time)  # threshold 0: boxes


def test_torch_threads_are_set_once_per_process() -> None:
    """Every inference entry point calls prepare_inference_process; only the first call sets
    torch's thread count, so no later caller toggles it."""
    threads = prepare_inference_process()

    assert prepare_inference_process(threads + 1) == threads
    assert torch.get_num_threads() == threads
