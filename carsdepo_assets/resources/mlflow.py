"""MLflow for Dagster: dagster-mlflow's tracking resource and the registry settings.

``mlflow_tracking`` opens one MLflow run per Dagster run (tagged with the Dagster run id), as
dagster-mlflow does; ours first points MLflow at the store of the ``carsdepo_home`` resource
(under the state folder, or ``$MLFLOW_TRACKING_URI``), fails fast when a server there is
unreachable, and creates the experiment with its artifacts under the store rather than in the
working directory.
"""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext, resource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from pydantic import Field

from carsdepo_assets.detection.bootstrap import LOWER_BOUND
from carsdepo_assets.resources.state import CarsdepoHome

DEFAULT_EXPERIMENT = "carsdepo-detector"
DEFAULT_MODEL_NAME = "carsdepo-damage-detector"


@resource(
    config_schema=CONFIG_SCHEMA,
    required_resource_keys={"carsdepo_home"},
    description="dagster-mlflow's mlflow_tracking over carsdepo's MLflow store.",
)
def mlflow_tracking(context: InitResourceContext) -> MlFlow:
    context.resources.carsdepo_home.connect_mlflow(context.resource_config["experiment_name"])
    return MlFlow(context)


class ModelRegistry(ConfigurableResource):
    """Which registered model the platform trains and serves, and the quality gate's rules."""

    carsdepo_home: CarsdepoHome = Field(default_factory=CarsdepoHome,
                                        description="Where the MLflow store is.")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="MLflow registered model.")
    min_ap50: float = Field(
        default=0.5, description="Gate: the lower bound of the challenger's test AP50 (bootstrap "
        "over test images, see evaluation_report) must reach this."
    )
    min_none_accuracy: float = Field(
        default=0.7, description='Gate: the lower bound of the damaged-vs-"None" accuracy must '
        "reach this."
    )
    tolerance: float = Field(
        default=0.02, description="Gate: how far below the champion a challenger may fall."
    )

    @property
    def minimums(self) -> dict[str, float]:
        """Minimums on lower bounds, so a small or unlucky test split cannot pass a weak model."""
        return {f"AP50{LOWER_BOUND}": self.min_ap50,
                f"none_accuracy{LOWER_BOUND}": self.min_none_accuracy}

    def connect(self) -> str:
        """Point MLflow at the store; returns its URI (fails fast when unreachable)."""
        return self.carsdepo_home.connect_mlflow()


def attach_tracking_run(tracking: MlFlow) -> str:
    """Make the Dagster run's MLflow run the active one and return its id.

    dagster-mlflow's ``end_mlflow_on_run_finished`` hook ends the MLflow run after each step;
    with the in-process executor the next step shares the resource, so it re-attaches here
    instead of letting MLflow start a stray run."""
    import mlflow

    active = mlflow.active_run()
    if active is None or active.info.run_id != tracking.mlflow_run_id:
        if active is not None:
            mlflow.end_run()
        mlflow.start_run(run_id=tracking.mlflow_run_id)
    return tracking.mlflow_run_id
