"""The drift policy: thresholds shared by the decision, its asset check and the docs."""

from dagster import ConfigurableResource
from pydantic import Field

from carsdepo_assets.monitoring.decision import DEFAULT_EXPERIMENT_AT, DEFAULT_RETRAIN_AT
from carsdepo_assets.monitoring.drift import DEFAULT_ALPHA


class DriftPolicy(ConfigurableResource):
    """When a batch's deviation (percent, see monitoring/drift.py) calls for action."""

    retrain_at: float = Field(
        default=DEFAULT_RETRAIN_AT, description="From this deviation (%) on: retrain."
    )
    experiment_at: float = Field(
        default=DEFAULT_EXPERIMENT_AT,
        description="Above this deviation (%): back to experimentation.",
    )
    alpha: float = Field(default=DEFAULT_ALPHA, description="Significance level of the KS tests.")
    champion_max_age_days: float = Field(
        default=14.0,
        description="Freshness: a champion older than this is stale when newer annotations exist.",
    )
