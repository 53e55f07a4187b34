"""MLflow for Dagster: dagster-mlflow's tracking resource, the registry settings, and the
champion as the source of Label Studio pre-annotations.

``mlflow_tracking`` opens one MLflow run per Dagster run (tagged with the Dagster run id), as
dagster-mlflow does; ours first points MLflow at the store under CARSDEPO_HOME (or
``$MLFLOW_TRACKING_URI``), fails fast when a server there is unreachable, and creates the
experiment with its artifacts under the store rather than in the working directory.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import ConfigurableResource, InitResourceContext, resource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from pydantic import Field

from carsdepo_assets.detection.bootstrap import LOWER_BOUND
from carsdepo_assets.detection.champion import CHAMPION, configure_mlflow
from carsdepo_assets.detection.pyfunc import load_registered_detector
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.prelabels import ImageToLabel, Prelabels
from carsdepo_assets.prediction.models import ModelNotFound, resolve_model
from carsdepo_assets.prediction.prelabels import DEFAULT_MIN_SCORE, model_prelabels
from carsdepo_assets.resources.label_studio import Prelabeler
from carsdepo_assets.state import StateLayout

DEFAULT_EXPERIMENT = "carsdepo-detector"
DEFAULT_MODEL_NAME = "carsdepo-damage-detector"


@resource(
    config_schema=CONFIG_SCHEMA,
    description="dagster-mlflow's mlflow_tracking over carsdepo's MLflow store.",
)
def mlflow_tracking(context: InitResourceContext) -> MlFlow:
    configure_mlflow(StateLayout.from_env(), context.resource_config["experiment_name"])
    return MlFlow(context)


class ModelRegistry(ConfigurableResource):
    """Which registered model the platform trains and serves, and the quality gate's rules."""

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
        return configure_mlflow(StateLayout.from_env())


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


class ChampionPrelabeler(Prelabeler):
    """Pre-annotations from ``models:/<model_name>@champion``; none while there is no champion.

    Bind it as the ``prelabeler`` resource: ``label_studio_tasks`` then attaches the champion's
    detections to new tasks with ``model_version`` "<model_name> v<version>", least confident
    images first."""

    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="MLflow registered model.")
    min_score: float = Field(
        default=DEFAULT_MIN_SCORE,
        description="Lowest detection score shown to annotators (below the operating "
        "threshold on purpose: unsure boxes are worth a look and put the image first).",
    )
    chunk_size: int = Field(default=8, description="Images predicted together.")

    def predictions_for(self, images: Sequence[ImageToLabel]) -> Prelabels | None:
        layout = StateLayout.from_env()
        configure_mlflow(layout)
        try:
            model = resolve_model(self.model_name, CHAMPION)
        except ModelNotFound:
            return None
        detector = load_registered_detector(model.uri)
        return model_prelabels(
            detector, model, [image.sha256 for image in images], ImageStore(layout.images).open,
            self.min_score, self.chunk_size,
        )
