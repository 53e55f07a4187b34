"""Asset metadata for people: figures rounded, MLflow pages as links."""

import math

from dagster import MetadataValue

from carsdepo_assets.resources.state import CarsdepoHome

FIGURE_DIGITS = 3


def rounded(value: float | None, digits: int = FIGURE_DIGITS) -> float | None:
    """``value`` to ``digits`` significant digits, its whole part kept (0.92085677 -> 0.921,
    0.012345 -> 0.0123, 1234.5 -> 1234.0): the float's noise says nothing to a reader."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))


def mlflow_links(
    home: CarsdepoHome, model_name: str, version: str, run_id: str | None = None
) -> dict[str, MetadataValue]:
    """Links to the registered version's page and, given ``run_id``, to the run's page."""
    links = {"mlflow_model_version": MetadataValue.url(home.mlflow_version_url(model_name,
                                                                               version))}
    if run_id:
        from mlflow.tracking import MlflowClient  # only here: the code location loads without it

        experiment_id = MlflowClient().get_run(run_id).info.experiment_id
        links["mlflow_run"] = MetadataValue.url(home.mlflow_run_url(experiment_id, run_id))
    return links
