"""MLflow reads like a model history after training_job: one named run per training holding the
model and its test figures, registered versions that say how they tested and what the gate
decided, an experiment MLflow opens in its model-training view, and Dagster metadata that links
there. Two tiny trainings (two iterations on synthetic panels): the first passes a lowered gate
and becomes champion, the second is held back by a gate it cannot pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import pytest
from dagster import AssetSpec, ExecuteInProcessResult, materialize
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from carsdepo_assets.assets.datasets import curated_dataset
from carsdepo_assets.assets.metadata import rounded
from carsdepo_assets.cli.runner import local_instance, materialization_metadata, run_job
from carsdepo_assets.detection.bootstrap import LOWER_BOUND
from carsdepo_assets.detection.champion import (
    EXPERIMENT_KIND_TAG,
    GATE_TAG,
    MODEL_TRAINING_KIND,
)
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.labeling.coco_import import parse_coco
from carsdepo_assets.labeling.history import write_snapshot
from carsdepo_assets.labeling.simulated import AnnotatorProfile, simulated_snapshot
from carsdepo_assets.resources.mlflow import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME
from carsdepo_assets.resources.state import DEFAULT_MLFLOW_UI, MODEL_TRAINING_VIEW, CarsdepoHome
from carsdepo_assets.state import ENV_VAR, StateLayout
from carsdepo_assets.synth import generate_dataset

WIDTH, HEIGHT = 224, 160
TINY_TRAINING = {"backend": "torchvision", "iterations": 2, "batch_size": 2,
                 "min_size": HEIGHT, "max_size": WIDTH}
PASSABLE_GATE = {"min_ap50": 0.0, "min_none_accuracy": 0.0}
IMPASSABLE_GATE = {"min_ap50": 1.01}  # above any AP50

pytestmark = pytest.mark.slow


@dataclass
class History:
    promoted: ExecuteInProcessResult
    held_back: ExecuteInProcessResult
    experiment_id: str
    runs: list[Run]  # every run of the experiment

    def run_of(self, result: ExecuteInProcessResult) -> Run:
        return next(run for run in self.runs if run.data.tags["dagster_run_id"] == result.run_id)


def train(layout: StateLayout, instance, gate: dict) -> ExecuteInProcessResult:
    return run_job("training_job", layout, instance=instance, raise_on_failure=False,
                   run_config={"ops": {"detector": {"config": TINY_TRAINING}},
                               "resources": {"model_registry": {"config": gate}}})


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Iterator[History]:
    """Two training_job runs on a curated dataset of 32 synthetic panels."""
    layout = StateLayout(tmp_path_factory.mktemp("home")).ensure()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(layout.root))
        patch.setenv("DAGSTER_HOME", str(layout.dagster_home))
        patch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: MLflow rewrites it
        synth = generate_dataset(tmp_path_factory.mktemp("synth"), n_images=32, seed=3,
                                 width=WIDTH, height=HEIGHT)
        manifest = ingest_batch(synth.images_dir, "b1", layout)
        write_snapshot(simulated_snapshot(manifest, parse_coco(synth.annotations_path),
                                          AnnotatorProfile(seed=0)), layout.annotations)
        instance = local_instance(layout)
        materialize([AssetSpec("annotations"), curated_dataset], instance=instance,
                    resources={"carsdepo_home": CarsdepoHome(path=str(layout.root))})
        promoted = train(layout, instance, PASSABLE_GATE)
        held_back = train(layout, instance, IMPASSABLE_GATE)
        experiment_id = MlflowClient().get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id
        yield History(promoted, held_back, experiment_id,
                      MlflowClient().search_runs([experiment_id]))
        mlflow.set_tracking_uri(None)


def version(number: str):
    return MlflowClient().get_model_version(DEFAULT_MODEL_NAME, number)


def test_each_training_is_one_mlflow_run_named_after_its_dagster_run(history):
    assert history.promoted.success and not history.held_back.success  # the gate held v2 back
    trainings = [history.promoted, history.held_back]

    assert len(history.runs) == len(trainings)  # no stray or empty run beside them
    for training in trainings:
        run = history.run_of(training)
        assert run.info.run_name == f"training_job {training.run_id[:8]}"
        assert run.info.status == ("FINISHED" if training.success else "FAILED")  # as Dagster's
        assert run.data.params["dataset_version"]
        assert "loss_total" in run.data.metrics and "test_AP50" in run.data.metrics
        assert [output.model_id for output in run.outputs.model_outputs]  # the logged model


def test_test_figures_sit_on_the_run_and_the_logged_model_of_their_version(history):
    for number, training in (("1", history.promoted), ("2", history.held_back)):
        run, registered = history.run_of(training), version(number)
        logged = MlflowClient().get_logged_model(registered.source.removeprefix("models:/"))

        assert registered.run_id == run.info.run_id == logged.source_run_id
        test_metrics = {m.key: m.value for m in logged.metrics if m.key.startswith("test_")}
        assert test_metrics["test_AP50"] == run.data.metrics["test_AP50"]
        assert f"test_AP50{LOWER_BOUND}" in test_metrics


def test_versions_say_what_they_were_trained_on_how_they_tested_and_what_the_gate_decided(
    history
):
    dataset = history.run_of(history.promoted).data.params["dataset_version"]
    for number, outcome in (("1", "passed"), ("2", "held back")):
        registered = version(number)
        assert registered.tags["carsdepo.dataset_version"] == dataset
        assert registered.tags[GATE_TAG] == outcome
        assert f"Quality gate: {outcome}." in registered.description
        assert f"trained on dataset {dataset}" in registered.description
        ap50 = MlflowClient().get_run(registered.run_id).data.metrics["test_AP50"]
        assert registered.tags["carsdepo.test_AP50"] == str(rounded(ap50))
        assert f"carsdepo.test_AP50{LOWER_BOUND}" in registered.tags
    assert "below the minimum 1.0100" in version("2").description


def test_the_experiment_opens_in_mlflows_model_training_view(history):
    experiment = MlflowClient().get_experiment(history.experiment_id)

    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_dagster_metadata_rounds_figures_and_links_to_the_mlflow_run_and_version(history):
    run_id = history.run_of(history.promoted).info.run_id
    run_url = (f"{DEFAULT_MLFLOW_UI}/#/experiments/{history.experiment_id}/runs/{run_id}"
               f"{MODEL_TRAINING_VIEW}")
    version_url = (f"{DEFAULT_MLFLOW_UI}/#/models/{DEFAULT_MODEL_NAME}/versions/1"
                   f"{MODEL_TRAINING_VIEW}")
    trained = materialization_metadata(history.promoted, "detector")
    report = materialization_metadata(history.promoted, "evaluation_report")
    deployed = materialization_metadata(history.promoted, "deployed_model")

    assert trained["mlflow_run"] == report["mlflow_run"] == run_url
    assert trained["mlflow_model_version"] == report["mlflow_model_version"] == version_url
    assert deployed["mlflow_model_version"] == version_url
    assert trained["train_images_per_s"] == rounded(trained["train_images_per_s"]) > 0
    test_metrics = history.run_of(history.promoted).data.metrics
    for figure in ("AP50", f"AP50{LOWER_BOUND}", "none_accuracy"):
        assert report[figure] == rounded(test_metrics[f"test_{figure}"])
    assert deployed["champion"] == f"{DEFAULT_MODEL_NAME} v1"

