"""Where carsdepo keeps its local state: one directory, ``CARSDEPO_HOME``.

Everything the platform writes (landing zone, image store, quarantine, manifests, datasets,
profiles, predictions, the Dagster instance, the MLflow store, Label Studio's data) lives under
one root so that a developer can inspect it, back it up, or delete it in one place.

``StateLayout`` is the only place a path under that root is spelled. Names that come from
outside (batch names, which are also Dagster partition keys; run ids; dataset versions) are
checked against one pattern before they become part of a path, and every path it hands out is
checked, after resolving links, to lie inside the root: a hostile name is refused, never
written. This module has no Dagster imports: the CLI, the domain code and the tests all use it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

ENV_VAR = "CARSDEPO_HOME"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".carsdepo"
# One pattern for every name that becomes a folder or file name (batch and partition names,
# run ids, dataset and snapshot versions): no separator, no leading dot, so never ``..``.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"


class InvalidName(ValueError):
    """A name that cannot become part of a path under the state folder."""


class OutsideStateFolder(ValueError):
    """A path that resolves (links followed) outside the state folder."""


def validate_name(name: object, what: str = "batch name") -> str:
    """``name`` unchanged when it matches ``NAME_PATTERN``; InvalidName otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid {what} {name!r}: use {NAME_RULE}")
    return name


def validate_batch_name(batch: object) -> str:
    """A batch name is a Dagster partition key and a folder and file name under the state."""
    return validate_name(batch, "batch name")


def default_batch_name(source_dir: Path) -> str:
    """A valid batch name from a folder's name ("Lot 12 (June)" -> "Lot-12-June")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source_dir).resolve().name).strip("._-")
    return validate_batch_name(name[:128] or "batch")


def default_home() -> Path:
    """``$CARSDEPO_HOME`` when set, else ``.carsdepo/`` in the project checkout."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured).expanduser().resolve() if configured else DEFAULT_HOME


@dataclass(frozen=True)
class StateLayout:
    """The folders and files under ``CARSDEPO_HOME``; see the README's "Where state lives"."""

    root: Path

    @classmethod
    def from_env(cls) -> StateLayout:
        return cls(default_home())

    def inside(self, path: Path) -> Path:
        """``path`` when it resolves (links followed) inside the state folder; else refused."""
        root = Path(self.root).resolve()
        resolved = Path(path).resolve()
        if resolved != root and root not in resolved.parents:
            raise OutsideStateFolder(
                f"refusing {path}: it resolves to {resolved}, outside the state folder {root}"
            )
        return Path(path)

    def _under(self, folder: str, *names: str) -> Path:
        return self.inside(Path(self.root, folder, *names))

    # -- folders -------------------------------------------------------------------------------

    @property
    def landing(self) -> Path:
        """New batches arrive here, one sub-folder per batch."""
        return self._under("landing")

    @property
    def images(self) -> Path:
        """Content-addressed store of accepted, normalised photos."""
        return self._under("images")

    @property
    def quarantine(self) -> Path:
        return self._under("quarantine")

    @property
    def manifests(self) -> Path:
        return self._under("manifests")

    @property
    def annotations(self) -> Path:
        return self._under("annotations")

    @property
    def datasets(self) -> Path:
        return self._under("datasets")

    @property
    def models(self) -> Path:
        """Working folders of training runs (checkpoints before they reach MLflow)."""
        return self._under("models")

    @property
    def reports(self) -> Path:
        return self._under("reports")

    @property
    def profiles(self) -> Path:
        return self._under("profiles")

    @property
    def predictions(self) -> Path:
        return self._under("predictions")

    @property
    def inference_log(self) -> Path:
        return self._under("inference_log")

    @property
    def dagster_home(self) -> Path:
        return self._under("dagster")

    @property
    def mlflow(self) -> Path:
        return self._under("mlflow")

    @property
    def label_studio(self) -> Path:
        return self._under("label-studio")

    @property
    def synthetic(self) -> Path:
        """Photos the demo and ``carsdepo check`` generated."""
        return self._under("synthetic")

    @property
    def locks(self) -> Path:
        """Lock files that serialise work on shared state (instance creation, batch runs)."""
        return self._under("locks")

    # -- per batch -----------------------------------------------------------------------------

    def landing_folder(self, batch: str) -> Path:
        return self._under("landing", validate_batch_name(batch))

    def quarantine_folder(self, batch: str) -> Path:
        """Rejected files of the batch (``files/``) and why each was rejected (``reasons/``)."""
        return self._under("quarantine", validate_batch_name(batch))

    def manifest_path(self, batch: str) -> Path:
        return self._under("manifests", f"{validate_batch_name(batch)}.json")

    def batch_profile_path(self, batch: str) -> Path:
        return self._under("profiles", "batches", f"{validate_batch_name(batch)}.bin")

    def reference_profile_path(self) -> Path:
        return self._under("profiles", "reference.bin")

    def drift_report_path(self, batch: str) -> Path:
        return self._under("reports", "drift", f"{validate_batch_name(batch)}.json")

    @property
    def decisions(self) -> Path:
        return self._under("reports", "decisions")

    def decision_path(self, batch: str) -> Path:
        return self._under("reports", "decisions", f"{validate_batch_name(batch)}.json")

    def prediction_path(self, batch: str) -> Path:
        return self._under("predictions", f"{validate_batch_name(batch)}.jsonl")

    def contact_sheet_path(self, batch: str) -> Path:
        return self._under("reports", "ingestion",
                           f"{validate_batch_name(batch)}-contact-sheet.jpg")

    def synthetic_folder(self, batch: str) -> Path:
        return self._under("synthetic", validate_batch_name(batch))

    def batch_lock(self, batch: str) -> FileLock:
        """Held by whoever runs or ingests the batch: one run of a batch at a time."""
        return _lock(self._under("locks", f"batch-{validate_batch_name(batch)}.lock"))

    # -- other named things --------------------------------------------------------------------

    @property
    def dataset_pointer(self) -> Path:
        """``datasets/latest.json``: the version the last ``curated_dataset`` run built."""
        return self._under("datasets", "latest.json")

    @property
    def mlflow_db(self) -> Path:
        return self._under("mlflow", "mlflow.db")

    @property
    def mlflow_artifacts(self) -> Path:
        return self._under("mlflow", "artifacts")

    @property
    def label_studio_server_file(self) -> Path:
        """The local Label Studio's pid file (pid, URL, data folder)."""
        return self._under("label-studio", "server.json")

    def dataset_folder(self, version: str) -> Path:
        return self._under("datasets", validate_name(version, "dataset version"))

    def run_folder(self, run_id: str, *parts: str) -> Path:
        """``models/<run id>/<part>...``: a training run's working folder."""
        names = [validate_name(part, "run folder name") for part in parts]
        return self._under("models", validate_name(run_id, "run id"), *names)

    def report_path(self, *parts: str) -> Path:
        """A report under ``reports/`` (e.g. ``kpis/dashboard.md``)."""
        return self._under("reports", *(validate_name(part, "report name") for part in parts))

    def instance_lock(self) -> FileLock:
        """Held while the Dagster instance's storage is created or changed outside a run
        (opening it, registering a partition)."""
        return _lock(self._under("locks", "dagster-instance.lock"))

    def ensure(self) -> StateLayout:
        """Create every folder (idempotent) and return self."""
        for folder in (
            self.landing, self.images, self.quarantine, self.manifests, self.annotations,
            self.datasets, self.models, self.reports, self.profiles, self.predictions,
            self.inference_log, self.dagster_home, self.mlflow, self.label_studio, self.locks,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def _lock(path: Path) -> FileLock:
    """An inter-process lock on ``path``, re-entrant within a process (one object per path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, is_singleton=True)
