"""The production configuration in deploy/: valid by Dagster's own config validation, and
working for real against a PostgreSQL server (Dagster storage and the MLflow backend store)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer

from carsdepo_assets.state import PROJECT_ROOT
from carsdepo_assets_tests.operations.conftest import land_batch

# The classes the production configs name: validating them needs their packages (dev extra).
for package in ("dagster_postgres", "dagster_k8s", "dagster_docker"):
    pytest.importorskip(package, reason=f"{package} (dev extra) validates deploy/dagster/*.yaml")

DEPLOY = PROJECT_ROOT / "deploy" / "dagster"
PRODUCTION_CONFIGS = ["dagster.yaml", "dagster.docker.yaml"]
# Sections holding a configurable class ({module, class, config}); storage is a selector.
CLASS_SECTIONS = ("run_launcher", "run_coordinator", "compute_logs", "scheduler",
                  "run_storage", "event_log_storage", "schedule_storage",
                  "local_artifact_storage")
STORAGE_CLASSES = {"postgres": ("dagster_postgres", "DagsterPostgresStorage")}


def validate_instance_config(folder: Path, filename: str) -> dict:
    """Validate an instance YAML the way Dagster does when it loads it: the instance schema,
    then each configured class (run launcher, coordinator, storage...) against its own config
    schema, which the instance only checks when that class is first used. Returns the config."""
    config, _ = dagster_instance_config(str(folder), filename)
    checks = [(section, config[section]["module"], config[section]["class"],
               config[section].get("config") or {})
              for section in CLASS_SECTIONS if section in config]
    for kind, value in (config.get("storage") or {}).items():
        checks.append((f"storage.{kind}", *STORAGE_CLASSES[kind], value))
    for section, module, name, value in checks:
        result = validate_config(class_from_code_pointer(module, name).config_type(), value)
        if not result.success:
            raise DagsterInvalidConfigError(f"{filename}: {section} ({name})", result.errors,
                                            value)
    return config


@pytest.mark.parametrize("filename", PRODUCTION_CONFIGS)
def test_production_instance_config_passes_dagsters_validation(filename):
    config = validate_instance_config(DEPLOY, filename)

    assert "postgres" in config["storage"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_instance_validation_rejects_a_misspelt_run_launcher_field(tmp_path):
    """The validation above is not a formality: one typo in the K8s launcher fails it."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_launcher"]["config"]["job_namspace"] = "carsdepo"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))

    with pytest.raises(DagsterInvalidConfigError, match="job_namspace"):
        validate_instance_config(tmp_path, "dagster.yaml")


@pytest.mark.postgres
def test_raw_images_materializes_in_a_postgres_instance_from_the_production_config(
    postgres_server, carsdepo_home, tmp_path, monkeypatch
):
    """deploy/dagster/dagster.yaml as is (Postgres storage; the K8s run launcher is only
    built when a run is launched, and in-process execution launches none)."""
    from carsdepo_assets.definitions import defs

    postgres_server.create_database("dagster")
    for name, value in postgres_server.dagster_env("dagster").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_K8S_JOB_NAMESPACE", "carsdepo")
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    land_batch(carsdepo_home, "pg-batch", count=3)

    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("batches", ["pg-batch"])
        result = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance, partition_key="pg-batch")
        assert result.success
    with DagsterInstance.from_config(str(home)) as reopened:
        assert type(reopened.run_storage).__name__ == "PostgresRunStorage"
        assert reopened.get_run_by_id(result.run_id).is_success
        event = reopened.get_latest_materialization_event(AssetKey("raw_images"))
        assert event.asset_materialization.partition == "pg-batch"
        assert event.asset_materialization.metadata["stored"].value == 3
        checks = reopened.event_log_storage.get_latest_asset_check_execution_by_key(
            [key for key in defs.resolve_asset_graph().asset_check_keys
             if key.asset_key == AssetKey("raw_images")])
        assert len(checks) == 3


@pytest.mark.postgres
def test_mlflow_tracks_and_registers_in_a_postgres_backend_store(postgres_server, tmp_path):
    """The backend store of deploy/'s MLflow server command: MLflow's schema migrations, runs
    and the model registry on PostgreSQL."""
    from mlflow.tracking import MlflowClient

    postgres_server.create_database("mlflow")
    client = MlflowClient(tracking_uri=postgres_server.url("mlflow"))
    experiment = client.create_experiment("carsdepo-detector",
                                          artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "AP50", 0.42)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("carsdepo-damage-detector")

    reread = MlflowClient(tracking_uri=postgres_server.url("mlflow"))
    assert reread.get_run(run.info.run_id).data.metrics == {"AP50": 0.42}
    assert reread.get_registered_model("carsdepo-damage-detector").name
