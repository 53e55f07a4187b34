"""The code location: every asset, check, sensor, job and resource of carsdepo."""

import os

from dagster import Definitions, EnvVar, load_asset_checks_from_modules, load_assets_from_modules

from carsdepo_assets import jobs
from carsdepo_assets.assets import (
    datasets,
    evaluation,
    experimentation,
    inference,
    ingestion,
    kpis,
    labeling,
    monitoring,
    training,
)
from carsdepo_assets.checks import datasets as dataset_checks
from carsdepo_assets.checks import evaluation as evaluation_checks
from carsdepo_assets.checks import ingestion as ingestion_checks
from carsdepo_assets.checks import labeling as labeling_checks
from carsdepo_assets.checks import monitoring as monitoring_checks
from carsdepo_assets.executors import executor_from_environment
from carsdepo_assets.labeling.server import DEFAULT_URL
from carsdepo_assets.resources.label_studio import LabelStudioResource
from carsdepo_assets.resources.mlflow import DEFAULT_EXPERIMENT, ModelRegistry, mlflow_tracking
from carsdepo_assets.resources.monitoring import DriftPolicy
from carsdepo_assets.resources.prelabeler import ChampionPrelabeler
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.sensors.annotations import annotation_sensor
from carsdepo_assets.sensors.datasets import dataset_sensor
from carsdepo_assets.sensors.drift import drift_sensor
from carsdepo_assets.sensors.freshness import freshness_sensor
from carsdepo_assets.sensors.landing_zone import landing_zone_sensor

ASSET_MODULES = [
    ingestion, labeling, datasets, training, evaluation, monitoring, experimentation, inference,
    kpis,
]
CHECK_MODULES = [
    ingestion_checks, labeling_checks, dataset_checks, evaluation_checks, monitoring_checks
]

def env_or_default(name: str, default: str) -> EnvVar | str:
    """``name`` from the environment (as an EnvVar, read when a run starts) when it is set,
    else ``default``. Label Studio's defaults: the local server `carsdepo labelstudio start`
    runs on 127.0.0.1, and no key, so that the resource uses the local token only for that
    server (``labeling.server.api_token``). A real deployment sets LABEL_STUDIO_URL and
    LABEL_STUDIO_API_KEY itself."""
    return EnvVar(name) if os.environ.get(name) else default


def build_resources(home: CarsdepoHome) -> dict:
    """Resources on embedded defaults, every one on the state folder ``home``; settings can be
    overridden by environment."""
    return {
        "carsdepo_home": home,
        "label_studio": LabelStudioResource(
            url=env_or_default("LABEL_STUDIO_URL", DEFAULT_URL),
            api_key=env_or_default("LABEL_STUDIO_API_KEY", ""),
            state_path=home.path,
        ),
        "prelabeler": ChampionPrelabeler(carsdepo_home=home),
        "mlflow": mlflow_tracking.configured({"experiment_name": DEFAULT_EXPERIMENT}),
        "model_registry": ModelRegistry(carsdepo_home=home),
        "drift_policy": DriftPolicy(),
    }


def build_definitions(home: CarsdepoHome | None = None) -> Definitions:
    """The code location on the state folder ``home`` (default: ``CarsdepoHome()``, i.e.
    $CARSDEPO_HOME); the CLI builds it on the folder it was given."""
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules(CHECK_MODULES),
        jobs=[
            jobs.ingest_job,
            jobs.labeling_job,
            jobs.dataset_job,
            jobs.training_job,
            jobs.monitoring_job,
            jobs.experimentation_job,
            jobs.freshness_job,
            jobs.prediction_job,
            jobs.checks_job,
            jobs.kpi_job,
        ],
        sensors=[landing_zone_sensor, annotation_sensor, dataset_sensor, drift_sensor,
                 freshness_sensor],
        resources=build_resources(home or CarsdepoHome()),
        executor=executor_from_environment(),
    )


defs = build_definitions()
