"""Which registered detector answers: ``champion``, ``challenger`` or a version number.

Needs MLflow pointed at the store first (``detection.champion.configure_mlflow``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from carsdepo_assets.detection.champion import CHALLENGER, CHAMPION, alias_version

ALIASES = (CHAMPION, CHALLENGER)
HOW_TO_TRAIN = "`carsdepo train` on your own labelled photos, or `make demo`"


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

    Raises ModelNotFound with what to do about it (a name the registry does not know is named as
    such), ValueError for a choice that is neither."""
    _check_registered(name)
    if choice in ALIASES:
        version = alias_version(name, choice)
        if version is None:
            raise ModelNotFound(
                f"model {name!r} has no {choice} yet: train one first ({HOW_TO_TRAIN})"
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


def _check_registered(name: str) -> None:
    """ModelNotFound for a name the registry has never heard of, with the names it has."""
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        known = sorted(model.name for model in client.search_registered_models())
        raise ModelNotFound(
            f"no registered model {name!r}: "
            + (f"the registry has {', '.join(map(repr, known))} (--model-name)" if known else
               f"the registry is empty: train one first ({HOW_TO_TRAIN})")
        ) from error
