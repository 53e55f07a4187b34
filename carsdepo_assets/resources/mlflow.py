"""MLflow for Dagster: dagster-mlflow's tracking resource and the registry settings.

``mlflow_tracking`` opens one MLflow run per Dagster run (tagged with the Dagster run id), as
dagster-mlflow does; ours first points MLflow at the store of the ``carsdepo_home`` resource
(under the state folder, or ``$MLFLOW_TRACKING_URI``), fails fast when a server there is
unreachable, and creates the experiment with its artifacts under the store rather than in the
working directory. It names the run ``<job> <Dagster run id's first 8 characters>``, and the
job's ``end_mlflow_on_run_finished`` hook ends it, so a training is one MLflow run: parameters,
losses, the logged model, and the test figures ``evaluation_report`` adds.

MLflow (and so dagster-mlflow, which imports it) is imported only when a run uses the resource
or the hook: it takes seconds to import, and every process that loads the code location (the
CLI, the daemon, each run worker) would pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, HookDefinition, InitResourceContext, resource
from pydantic import Field

from carsdepo_assets.detection.bootstrap import LOWER_BOUND
from carsdepo_assets.resources.state import CarsdepoHome

if TYPE_CHECKING:
    from dagster_mlflow.resources import MlFlow

    from carsdepo_assets.detection.champion import GateDecision

DEFAULT_EXPERIMENT = "carsdepo-detector"
DEFAULT_MODEL_NAME = "carsdepo-damage-detector"


@resource(
    # The experiment only (the store is carsdepo_home's): dagster-mlflow's CONFIG_SCHEMA cannot
    # be imported without MLflow, and MlFlow reads its other keys as optional.
    config_schema={"experiment_name": str},
    required_resource_keys={"carsdepo_home"},
    description="dagster-mlflow's mlflow_tracking over carsdepo's MLflow store.",
)
def mlflow_tracking(context: InitResourceContext) -> MlFlow:
    import mlflow
    from dagster_mlflow.resources import MlFlow
    from mlflow.tracking import MlflowClient

    home, experiment = context.resources.carsdepo_home, context.resource_config["experiment_name"]
    home.connect_mlflow(experiment)
    home.end_earlier_attempts(context.dagster_run.tags, experiment)
    if mlflow.active_run() is not None:  # an earlier Dagster run's: MlFlow would adopt it
        mlflow.end_run()
    tracking = MlFlow(context)  # starts the run, or resumes it in a later step's process
    # dagster-mlflow keeps the id of a run it resumes but not of one it starts
    tracking.mlflow_run_id = mlflow.active_run().info.run_id
    MlflowClient().update_run(tracking.mlflow_run_id, name=tracking_run_name(
        context.dagster_run.job_name, context.run_id))
    return tracking


def _end_mlflow_run(context, event_list):
    from dagster_mlflow import end_mlflow_on_run_finished as hook

    return hook.hook_fn(context, event_list)


# dagster-mlflow's end_mlflow_on_run_finished, imported when it fires: it ends the MLflow run
# after the job's last step (as failed when a step fails).
end_mlflow_on_run_finished = HookDefinition(
    name="end_mlflow_on_run_finished", hook_fn=_end_mlflow_run, required_resource_keys={"mlflow"}
)


def tracking_run_name(job_name: str, dagster_run_id: str) -> str:
    """Known from the run's first step on (a failed training is named too), distinct per run,
    and the run id's prefix is how the Dagster UI shows the run."""
    return f"{job_name} {dagster_run_id[:8]}"


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

    def judge(self, models: Mapping[str, dict]) -> GateDecision:
        """The quality gate on evaluation_report's ``models`` (the challenger's metrics, and the
        champion's when there is one)."""
        from carsdepo_assets.detection.champion import gate

        champion = models.get("champion")
        return gate(models["challenger"]["metrics"], champion["metrics"] if champion else None,
                    self.minimums, self.tolerance)

