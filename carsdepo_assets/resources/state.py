"""The state directory as a Dagster resource: every other resource and asset receives the state
folder (and the MLflow store beside it) from here, as a value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from dagster import ConfigurableResource
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG
from pydantic import Field

from carsdepo_assets.state import StateLayout, default_home

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"  # where `make mlflow-ui` serves


# MLflow 3.17's UI opens every experiment in its GenAI view (traces) unless the URL or the
# user's last choice says otherwise; the experiment's mlflow.experimentKind tag does not decide.
MODEL_TRAINING_VIEW = "?workflowType=machine_learning"


class CarsdepoHome(ConfigurableResource):
    """Root of all local state (``CARSDEPO_HOME``); empty means the environment's default."""

    path: str = Field(
        default="",
        description="State directory. Empty: $CARSDEPO_HOME, else .carsdepo/ in the checkout.",
    )
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow store. Empty: $MLFLOW_TRACKING_URI, else SQLite under the state "
        "directory.",
    )
    mlflow_ui_url: str = Field(
        default=DEFAULT_MLFLOW_UI,
        description="The MLflow UI over that store, which the links in Dagster metadata open.",
    )

    @property
    def layout(self) -> StateLayout:
        root = self.path or str(default_home())
        return StateLayout(Path(root)).ensure()

    def connect_mlflow(self, experiment: str | None = None) -> str:
        """Point MLflow at this state's store (``configure_mlflow``); returns its URI."""
        # imported here: MLflow is slow to import, and the code location loads without it
        from carsdepo_assets.detection.champion import configure_mlflow

        return configure_mlflow(self.layout, experiment, self.mlflow_tracking_uri or None)

    def end_earlier_attempts(self, run_tags: Mapping[str, str], experiment: str) -> list[str]:
        """For a retried Dagster run (tags ``dagster/parent_run_id``, ``dagster/root_run_id``):
        end the MLflow runs its earlier attempts left RUNNING in ``experiment`` when their
        process died (``end_abandoned_runs``)."""
        from carsdepo_assets.detection.champion import end_abandoned_runs

        earlier = [run_tags[tag] for tag in (PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG)
                   if tag in run_tags]
        return end_abandoned_runs(experiment, earlier)

    def mlflow_run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI (its routes live after ``#``), in the UI's model
        training view (``MODEL_TRAINING_VIEW``)."""
        return (f"{self.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
                f"{MODEL_TRAINING_VIEW}")

    def mlflow_version_url(self, model_name: str, version: str) -> str:
        """The registered model version's page in the MLflow UI."""
        return (f"{self.mlflow_ui_url.rstrip('/')}/#/models/{quote(model_name, safe='')}"
                f"/versions/{version}{MODEL_TRAINING_VIEW}")
