"""Which registered detector answers: ``champion``, ``challenger`` or a version number.

Needs MLflow pointed at the store first (``detection.champion.configure_mlflow``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from carsdepo_assets.detection.champion import CHALLENGER, CHAMPION, alias_version

ALIASES = (CHAMPION, CHALLENGER)


class ModelNotFound(LookupError):
    """The registry has no model for the choice (no champion yet, unknown version...)."""


@dataclass(frozen=True)
class ModelRef:
    """One registered version of a model."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


def resolve_model(name: str, choice: str = CHAMPION) -> ModelRef:
    """The version ``choice`` names: an alias (``champion``, ``challenger``) or a version number.

    Raises ModelNotFound with what to do about it, ValueError for a choice that is neither."""
    if choice in ALIASES:
        version = alias_version(name, choice)
        if version is None:
            raise ModelNotFound(
                f"model {name!r} has no {choice} yet: train one first (`make demo`, or "
                "materialize the training job in Dagster)"
                + (", and let the quality gate promote it" if choice == CHAMPION else "")
            )
        return ModelRef(name, version)
    if not choice.isdigit():
        raise ValueError(
            f"model choice {choice!r}: expected {' or '.join(ALIASES)} or a version number"
        )
    try:
        MlflowClient().get_model_version(name, choice)
    except MlflowException as error:
        raise ModelNotFound(f"model {name!r} has no version {choice}: {error.message}") from error
    return ModelRef(name, choice)
