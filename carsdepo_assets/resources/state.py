"""The state directory as a Dagster resource: every other resource and asset receives the state
folder (and the MLflow store beside it) from here, as a value."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from carsdepo_assets.detection.champion import configure_mlflow
from carsdepo_assets.state import StateLayout, default_home


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

    @property
    def layout(self) -> StateLayout:
        root = self.path or str(default_home())
        return StateLayout(Path(root)).ensure()

    def connect_mlflow(self, experiment: str | None = None) -> str:
        """Point MLflow at this state's store (``configure_mlflow``); returns its URI."""
        return configure_mlflow(self.layout, experiment, self.mlflow_tracking_uri or None)
