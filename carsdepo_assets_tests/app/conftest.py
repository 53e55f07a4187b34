"""Fixtures of the page's tests: the prediction tests' tiny registered champion, and drift
decisions made by the real monitoring assets, once per package, copied into each test's state.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from carsdepo_assets.state import StateLayout
from carsdepo_assets.synth import generate_dataset

SIZE = {"width": 208, "height": 160}
NORMAL_BATCH, DIM_BATCH = "lot-normal", "lot-very-dim"
MONITORING_FOLDERS = ("profiles", "reports")


@pytest.fixture(scope="package")
def monitoring_template(tmp_path_factory) -> StateLayout:
    """A state whose reference profile comes from normal photos and where the monitoring
    assets decided on a normal batch and a very dim one, through Dagster (no champion: light
    features only)."""
    from dagster import DagsterInstance, materialize

    from carsdepo_assets.assets.monitoring import batch_profile, drift_report, retraining_decision
    from carsdepo_assets.images.ingest import ingest_batch
    from carsdepo_assets.monitoring.features import iter_image_features
    from carsdepo_assets.monitoring.profiles import profile_rows, write_profile
    from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
    from carsdepo_assets.resources.mlflow import ModelRegistry
    from carsdepo_assets.resources.monitoring import DriftPolicy
    from carsdepo_assets.resources.state import CarsdepoHome

    layout = StateLayout(tmp_path_factory.mktemp("monitored-home")).ensure()
    home = CarsdepoHome(path=str(layout.root))
    reference = generate_dataset(layout.root / "synthetic" / "reference", 30, 1, **SIZE)
    write_profile(profile_rows(iter_image_features(sorted(reference.images_dir.glob("*.jpg")))),
                  layout.reference_profile_path())
    with DagsterInstance.ephemeral(tempdir=str(layout.root / "dagster")) as instance:
        for seed, (batch_name, lighting) in enumerate(
                ((NORMAL_BATCH, "normal"), (DIM_BATCH, "very-dim")), start=2):
            photos = generate_dataset(layout.root / "synthetic" / batch_name, 20, seed, lighting,
                                      **SIZE)
            ingest_batch(photos.images_dir, batch_name, layout)
            instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, [batch_name])
            assert materialize(
                [batch_profile, drift_report, retraining_decision], partition_key=batch_name,
                instance=instance,
                resources={"carsdepo_home": home,
                           "model_registry": ModelRegistry(carsdepo_home=home),
                           "drift_policy": DriftPolicy()},
            ).success
    return layout


@pytest.fixture
def monitored(carsdepo_home: StateLayout, monitoring_template: StateLayout) -> StateLayout:
    """``carsdepo_home`` with the template's profiles and reports (decisions, drift)."""
    for folder in MONITORING_FOLDERS:
        shutil.copytree(Path(monitoring_template.root, folder), Path(carsdepo_home.root, folder),
                        dirs_exist_ok=True)
    return carsdepo_home
