"""Pre-annotations for new Label Studio tasks: the ``prelabeler`` resource.

``label_studio_tasks`` asks the bound ``Prelabeler`` for detections to attach to new tasks; the
base offers none, ``ChampionPrelabeler`` runs the champion model.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import ConfigurableResource
from pydantic import Field

from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.prelabels import ImageToLabel, Prelabels
from carsdepo_assets.prediction.prelabels import DEFAULT_MIN_SCORE, model_prelabels
from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME
from carsdepo_assets.resources.state import CarsdepoHome


class Prelabeler(ConfigurableResource):
    """Pre-annotations for new tasks. This base returns none ("no champion model yet").

    ``ChampionPrelabeler`` runs the champion model; bound as the ``prelabeler`` resource,
    ``label_studio_tasks`` attaches its detections with their ``model_version``, least
    confident images first.
    """

    def predictions_for(self, images: Sequence[ImageToLabel]) -> Prelabels | None:
        return None


class ChampionPrelabeler(Prelabeler):
    """Pre-annotations from ``models:/<model_name>@champion``; none while there is no champion.

    Bind it as the ``prelabeler`` resource: ``label_studio_tasks`` then attaches the champion's
    detections to new tasks with ``model_version`` "<model_name> v<version>", least confident
    images first."""

    carsdepo_home: CarsdepoHome = Field(default_factory=CarsdepoHome,
                                        description="The image store and the MLflow store.")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="MLflow registered model.")
    min_score: float = Field(
        default=DEFAULT_MIN_SCORE,
        description="Lowest detection score shown to annotators (below the operating "
        "threshold on purpose: unsure boxes are worth a look and put the image first).",
    )
    chunk_size: int = Field(default=8, description="Images predicted together.")

    def predictions_for(self, images: Sequence[ImageToLabel]) -> Prelabels | None:
        # imported here: MLflow and torch are slow to import, and the code location loads
        # without them
        from carsdepo_assets.detection.champion import CHAMPION
        from carsdepo_assets.prediction.models import ModelNotFound, resolve_model
        from carsdepo_assets.prediction.pyfunc import load_registered_detector

        layout = self.carsdepo_home.layout
        self.carsdepo_home.connect_mlflow()
        try:
            model = resolve_model(self.model_name, CHAMPION)
        except ModelNotFound:
            return None
        detector = load_registered_detector(model.uri)
        return model_prelabels(
            detector, model, [image.sha256 for image in images], ImageStore(layout.images).open,
            self.min_score, self.chunk_size,
        )
