"""Champion and challenger: which detector version serves, and how one replaces another.

Every trained detector is registered in MLflow's model registry as a new version carrying the
alias ``challenger``. The quality gate (:func:`gate`, a pure function) decides whether it may
replace the ``champion``; :func:`promote` moves the alias and records, as a tag on the new
champion version, which version it replaced, so :func:`rollback` can restore it (and, called
again, the one before). The store is local by default: SQLite plus an artifact folder under
``CARSDEPO_HOME/mlflow``; ``MLFLOW_TRACKING_URI`` points everything elsewhere.

The registry functions use MLflow's process-wide tracking URI: call :func:`configure_mlflow`
first. Note that MLflow mirrors that URI into ``$MLFLOW_TRACKING_URI`` for child processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlparse

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from carsdepo_assets.state import StateLayout

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION_TAG = "carsdepo.previous_champion"
PROMOTED_AT_TAG = "carsdepo.promoted_at"
ROLLED_BACK_AT_TAG = "carsdepo.rolled_back_at"
GATE_TAG = "carsdepo.quality_gate"  # GateDecision.outcome, on the version it judged
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces); this value
# opens the model-training view (runs, metrics, models).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# What the gate compares with the champion unless told otherwise: the headline targets.
DEFAULT_KEY_METRICS: tuple[str, ...] = ("AP50", "none_accuracy")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no champion, nothing to roll back to...)."""


class MlflowUnreachableError(RuntimeError):
    """The configured MLflow tracking server does not answer."""


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger may become champion, with one sentence per rule that decided it:
    the failed rules when it fails, every rule checked when it passes."""

    passed: bool
    reasons: tuple[str, ...]

    @property
    def outcome(self) -> str:
        return "passed" if self.passed else "held back"


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous_champion: str | None


def mlflow_tracking_uri(layout: StateLayout, uri: str | None = None) -> str:
    """``uri`` when given, else ``$MLFLOW_TRACKING_URI`` when set, else SQLite at
    ``<CARSDEPO_HOME>/mlflow/mlflow.db``."""
    return uri or os.environ.get(TRACKING_URI_ENV) or local_tracking_uri(layout)


def mlflow_artifact_root(layout: StateLayout, uri: str | None = None) -> str | None:
    """Where experiments created here keep artifacts: ``<CARSDEPO_HOME>/mlflow/artifacts`` for
    the local default store; None (the store's or server's own choice) for any other URI."""
    if mlflow_tracking_uri(layout, uri) != local_tracking_uri(layout):
        return None
    return layout.mlflow_artifacts.as_uri()


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, naming ``uri``, when an HTTP(S) tracking server does not answer in ``timeout``
    seconds (any HTTP answer counts). Local stores (sqlite, file) need no check."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except requests.RequestException as error:
        raise MlflowUnreachableError(
            f"MLflow tracking server {uri} is unreachable ({type(error).__name__}: {error}). "
            f"Start it, or unset {TRACKING_URI_ENV} to use the local store under CARSDEPO_HOME."
        ) from error


def configure_mlflow(
    layout: StateLayout, experiment: str | None = None, uri: str | None = None
) -> str:
    """Point MLflow at the store for ``layout`` (``uri`` when given: ``mlflow_tracking_uri``)
    and return its URI.

    With ``experiment``, also create it if missing (its artifacts in the store's artifact
    root, never ``./mlruns``), tag it as model training (``EXPERIMENT_KIND_TAG``) unless it
    says what it is, and make it the active experiment. Call this before anything (e.g.
    dagster-mlflow's resource) calls ``mlflow.set_experiment``.
    """
    uri = mlflow_tracking_uri(layout, uri)
    check_reachable(uri)
    layout.mlflow.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)  # the registry follows it unless $MLFLOW_REGISTRY_URI is set
    if experiment is not None:
        client = MlflowClient()
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            root = mlflow_artifact_root(layout, uri)
            location = f"{root}/{experiment}" if root else None
            client.create_experiment(experiment, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        elif EXPERIMENT_KIND_TAG not in found.tags:  # made before the tag was set here
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                      MODEL_TRAINING_KIND)
        mlflow.set_experiment(experiment)
    return uri


def end_abandoned_runs(experiment: str, dagster_run_ids: Sequence[str]) -> list[str]:
    """Mark KILLED the runs of ``experiment`` still RUNNING for the Dagster runs
    ``dagster_run_ids`` (tag ``dagster_run_id``): earlier attempts of a retried run whose process
    died mid-step, which nothing else would ever end. Returns the MLflow run ids ended."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None or not dagster_run_ids:
        return []
    client = MlflowClient()
    running = client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'")
    ended = [run.info.run_id for run in running
             if run.data.tags.get("dagster_run_id") in dagster_run_ids]
    for run_id in ended:
        client.set_terminated(run_id, status="KILLED")
    return ended


def gate(
    challenger_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    minimums: Mapping[str, float],
    tolerance: float,
    key_metrics: Sequence[str] = DEFAULT_KEY_METRICS,
) -> GateDecision:
    """The quality gate. The challenger must reach every minimum, and on each key metric must
    not fall below the champion by more than ``tolerance`` (absolute). A metric the challenger
    lacks (or that is NaN) fails; one the champion lacks is not compared."""
    passes: list[str] = []
    failures: list[str] = []
    for name, minimum in minimums.items():
        value = _defined(challenger_metrics.get(name))
        if value is None:
            failures.append(f"{name} is missing from the challenger's metrics (minimum {minimum})")
        elif value < minimum:
            failures.append(f"{name} {value:.4f} is below the minimum {minimum:.4f}")
        else:
            passes.append(f"{name} {value:.4f} reaches the minimum {minimum:.4f}")
    if champion_metrics is None:
        passes.append("no champion to compare with")
    else:
        for name in key_metrics:
            value = _defined(challenger_metrics.get(name))
            reference = _defined(champion_metrics.get(name))
            if reference is None:
                passes.append(f"{name}: the champion has no value, not compared")
            elif value is None:
                failures.append(f"{name} is missing from the challenger's metrics "
                                f"(champion {reference:.4f})")
            elif value < reference - tolerance:
                failures.append(f"{name} {value:.4f} falls below the champion's {reference:.4f} "
                                f"by {reference - value:.4f}, more than the tolerance {tolerance}")
            else:
                passes.append(f"{name} {value:.4f} vs champion {reference:.4f}: within the "
                              f"tolerance {tolerance}")
    return GateDecision(passed=not failures, reasons=tuple(failures or passes))


def register_challenger(model_uri: str, name: str, tags: Mapping[str, str] | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name`` (created if needed), alias it
    ``challenger`` and return the version."""
    version = str(mlflow.register_model(model_uri, name, tags=dict(tags or {})).version)
    MlflowClient().set_registered_model_alias(name, CHALLENGER, version)
    return version


def describe_version(name: str, version: str, description: str,
                     tags: Mapping[str, str]) -> None:
    """Write what a person reading the registry wants first on the version's own page."""
    client = MlflowClient()
    client.update_model_version(name, version, description=description)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def alias_version(name: str, alias: str) -> str | None:
    """The version of ``name`` that carries ``alias``; None when there is none (or no model)."""
    try:
        aliases = MlflowClient().get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    return str(aliases[alias]) if alias in aliases else None


def current_champion(name: str) -> str | None:
    return alias_version(name, CHAMPION)


def promote(name: str, version: str) -> Promotion:
    """Make ``version`` the champion, recording the champion it replaces on the version.

    Promoting the current champion again changes nothing."""
    client = MlflowClient()
    version = str(version)
    try:
        client.get_model_version(name, version)
    except MlflowException as error:
        message = f"cannot promote {name!r} version {version}: {error.message}"
        raise RegistryError(message) from error
    previous = current_champion(name)
    if previous == version:
        tags = client.get_model_version(name, version).tags
        return Promotion(name, version, tags.get(PREVIOUS_CHAMPION_TAG))
    if previous is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous)
    client.set_model_version_tag(name, version, PROMOTED_AT_TAG, _now())
    client.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(name, version, previous)


def rollback(name: str) -> str:
    """Give the champion alias back to the version the current champion replaced; return it.

    Raises RegistryError when there is no champion or it replaced none."""
    client = MlflowClient()
    champion = current_champion(name)
    if champion is None:
        raise RegistryError(f"model {name!r} has no champion: nothing to roll back")
    previous = client.get_model_version(name, champion).tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RegistryError(
            f"model {name!r}: champion version {champion} did not replace an earlier champion, "
            "so there is no previous version to roll back to"
        )
    client.set_model_version_tag(name, champion, ROLLED_BACK_AT_TAG, _now())
    client.set_registered_model_alias(name, CHAMPION, previous)
    return previous


def local_tracking_uri(layout: StateLayout) -> str:
    """The local default store: SQLite under the state folder."""
    return f"sqlite:///{layout.mlflow_db}"


def _defined(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
