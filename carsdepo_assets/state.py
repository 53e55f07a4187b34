"""Where carsdepo keeps its local state: one directory, ``CARSDEPO_HOME``.

Everything the platform writes (landing zone, image store, quarantine, manifests, datasets,
profiles, predictions, the Dagster instance, the MLflow store, Label Studio's data) lives under
one root so that a developer can inspect it, back it up, or delete it in one place.
This module has no Dagster imports: the CLI, the domain code and the tests all use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CARSDEPO_HOME"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".carsdepo"


def default_home() -> Path:
    """``$CARSDEPO_HOME`` when set, else ``.carsdepo/`` in the project checkout."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured).expanduser().resolve() if configured else DEFAULT_HOME


@dataclass(frozen=True)
class StateLayout:
    """The folders under ``CARSDEPO_HOME``; see the README's "Where state lives"."""

    root: Path

    @classmethod
    def from_env(cls) -> StateLayout:
        return cls(default_home())

    @property
    def landing(self) -> Path:
        """New batches arrive here, one sub-folder per batch."""
        return self.root / "landing"

    @property
    def images(self) -> Path:
        """Content-addressed store of accepted, normalised photos."""
        return self.root / "images"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def models(self) -> Path:
        """Working folders of training runs (checkpoints before they reach MLflow)."""
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def profiles(self) -> Path:
        return self.root / "profiles"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def inference_log(self) -> Path:
        return self.root / "inference_log"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def label_studio(self) -> Path:
        return self.root / "label-studio"

    def manifest_path(self, batch: str) -> Path:
        return self.manifests / f"{batch}.json"

    def ensure(self) -> StateLayout:
        """Create every folder (idempotent) and return self."""
        for folder in (
            self.landing, self.images, self.quarantine, self.manifests, self.annotations,
            self.datasets, self.models, self.reports, self.profiles, self.predictions,
            self.inference_log, self.dagster_home, self.mlflow, self.label_studio,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        return self
