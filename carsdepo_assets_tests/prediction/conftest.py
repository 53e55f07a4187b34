"""A real registered champion for the prediction tests, trained once for the package.

Training and logging a detector take most of a minute, so they happen once: a tiny detector
(a few iterations on synthetic panels) is logged as the pyfunc and promoted to champion in a
template MLflow store. Each test that needs a champion copies that store (the SQLite file; the
artifacts stay in the template) into its own ``carsdepo_home``, so tests stay independent
while they share the expensive part; a test that needs a registry without a champion copies
an empty store made once (creating MLflow's tables takes seconds, too).

A few iterations teach nothing, so the tests prove the plumbing, not the model's quality:
``box_score_thresh=0`` keeps every candidate box, so that at threshold 0 every image gets
detections and at threshold 1 every image is "None".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from carsdepo_assets.detection.backends import train_detector
from carsdepo_assets.detection.champion import configure_mlflow, promote
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import CocoSplit
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.pyfunc import log_detector_model
from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME
from carsdepo_assets.state import StateLayout
from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CLASS_NAMES

WIDTH, HEIGHT = 224, 160
BATCH = "lot-1"


@pytest.fixture(scope="package")
def panels(tmp_path_factory) -> Path:
    """Six synthetic panels (some clean) with COCO ground truth: ``<folder>/images/*.jpg``."""
    out = tmp_path_factory.mktemp("panels")
    generate_dataset(out, n_images=6, seed=5, width=WIDTH, height=HEIGHT)
    return out


@pytest.fixture(scope="package")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created and nothing in it."""
    layout = StateLayout(tmp_path_factory.mktemp("empty-home")).ensure()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: MLflow rewrites it
        configure_mlflow(layout)
        mlflow.MlflowClient().search_registered_models()  # the store is created on first use
        mlflow.set_tracking_uri(None)
    return layout.mlflow / "mlflow.db"


@pytest.fixture(scope="package")
def registry_template(panels, empty_store, tmp_path_factory) -> StateLayout:
    """A state directory whose MLflow store holds the tiny detector as version 1, champion."""
    config = DetectorConfig.preset(
        "cpu", backend="torchvision", iterations=2, batch_size=2, min_size=HEIGHT,
        max_size=WIDTH, box_score_thresh=0.0, eval_period=1000, checkpoint_period=1000,
    )
    work = tmp_path_factory.mktemp("training")
    saved = train_detector(CocoSplit.from_folder(panels), None, config, work).save(
        work / "detector")
    layout = StateLayout(tmp_path_factory.mktemp("template-home")).ensure()
    shutil.copy2(empty_store, layout.mlflow / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: MLflow rewrites it
        configure_mlflow(layout, "prediction-tests")
        with mlflow.start_run():
            info = log_detector_model(saved, registered_model_name=DEFAULT_MODEL_NAME)
        promote(DEFAULT_MODEL_NAME, str(info.registered_model_version))
        mlflow.set_tracking_uri(None)
    return layout


@pytest.fixture
def champion(carsdepo_home: StateLayout, registry_template: StateLayout) -> ModelRef:
    """``carsdepo_home`` with a copy of the template registry: version 1 is the champion."""
    shutil.copy2(registry_template.mlflow / "mlflow.db", carsdepo_home.mlflow / "mlflow.db")
    configure_mlflow(carsdepo_home)
    return ModelRef(DEFAULT_MODEL_NAME, "1")


@pytest.fixture
def empty_registry(carsdepo_home: StateLayout, empty_store: Path) -> StateLayout:
    """``carsdepo_home`` with an MLflow store that has no registered model."""
    shutil.copy2(empty_store, carsdepo_home.mlflow / "mlflow.db")
    return carsdepo_home


@pytest.fixture
def batch(carsdepo_home: StateLayout, panels: Path) -> BatchManifest:
    """The panels ingested into ``carsdepo_home`` as batch ``lot-1``."""
    return ingest_batch(panels / "images", BATCH, carsdepo_home)


def well_formed(answer, width: int = WIDTH, height: int = HEIGHT) -> bool:
    """A non-empty list of detections with known labels, scores and in-image pixel boxes."""
    return isinstance(answer, list) and bool(answer) and all(
        d["label"] in CLASS_NAMES and 0.0 <= d["score"] <= 1.0
        and 0 <= d["box"][0] <= d["box"][2] <= width and 0 <= d["box"][1] <= d["box"][3] <= height
        for d in answer
    )
