"""The checks behind ``carsdepo fsck`` (see ``cli.fsck``): the image store and manifests
(``images.fsck``), and the state files of the layers above it, each read the way the platform
reads it: annotation snapshots, curated datasets, the Dagster and MLflow SQLite databases, the
model files logged to MLflow."""

from __future__ import annotations

import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from carsdepo_assets.fileio import DamagedFile, read_json
from carsdepo_assets.images.fsck import Finding, check_images_and_manifests, unreadable
from carsdepo_assets.state import StateLayout

WEIGHTS_SUFFIX = ".pt"


def check_state(layout: StateLayout, repair: bool = False) -> list[Finding]:
    """Every problem of the state folder (see the module docstring), repaired where it can be
    when ``repair``."""
    return [
        *check_images_and_manifests(layout, repair),
        *check_annotation_snapshots(layout.annotations),
        *check_datasets(layout),
        *check_databases(layout),
        *check_model_artifacts(layout.mlflow_artifacts),
    ]


def check_annotation_snapshots(folder: Path) -> Iterator[Finding]:
    from carsdepo_assets.labeling.history import LATEST_FILE
    from carsdepo_assets.labeling.snapshot import AnnotationSnapshot

    action = ("materialize the `annotations` asset again to write a fresh snapshot from Label "
              "Studio, or restore the file from a backup")
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        payload, finding = _load_json(path, action)
        if finding is not None:
            yield finding
            continue
        try:
            AnnotationSnapshot.from_dict(payload)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            yield Finding(path, f"not an annotation snapshot: {error!r}", action)
    pointer = folder / LATEST_FILE
    if pointer.is_file():
        named = folder / f"{pointer.read_text().strip()}.json"
        if not named.is_file():
            yield Finding(pointer, f"names snapshot {named.name}, which is missing", action)


def check_datasets(layout: StateLayout) -> Iterator[Finding]:
    from carsdepo_assets.datasets.coco import MANIFEST_NAME, load_dataset

    action = ("materialize `curated_dataset` again (a dataset is rebuilt from the annotation "
              "snapshot), or restore the folder from a backup")
    folders = sorted(path for path in layout.datasets.iterdir()
                     if path.is_dir()) if layout.datasets.is_dir() else []
    for folder in folders:
        unparsed = [finding for _, finding in (_load_json(path, action)
                                               for path in sorted(folder.glob("*.json")))
                    if finding is not None]
        yield from unparsed
        if not unparsed:
            try:
                load_dataset(folder)
            except (FileNotFoundError, KeyError, TypeError) as error:
                yield Finding(folder, f"not a usable dataset: {error}", action)
    pointer = layout.dataset_pointer
    if pointer.is_file():
        payload, finding = _load_json(pointer, action)
        version = payload.get("version") if isinstance(payload, dict) else None
        if finding is not None:
            yield finding
        elif not isinstance(version, str):
            yield Finding(pointer, "names no dataset version", action)
        elif not (layout.datasets / version / MANIFEST_NAME).is_file():
            yield Finding(pointer, f"names dataset {version}, which is missing", action)


def _load_json(path: Path, action: str) -> tuple[Any, Finding | None]:
    """The JSON in ``path``, or None and the finding that says why it cannot be read."""
    try:
        return read_json(path, action), None
    except DamagedFile as damaged:
        return None, Finding(path, damaged.problem, action)
    except OSError as error:
        return None, unreadable(path, error)


def check_databases(layout: StateLayout) -> Iterator[Finding]:
    dagster_action = ("the Dagster instance's history is damaged: move the damaged file aside "
                      "(Dagster makes a new one: the runs it held are lost from the UI) or "
                      "restore it from a backup")
    dagster = layout.dagster_home
    for path in sorted(dagster.rglob("*.db")) if dagster.is_dir() else []:
        if (problem := sqlite_problem(path)) is not None:
            yield Finding(path, problem, dagster_action)
    if layout.mlflow_db.is_file() and (problem := sqlite_problem(layout.mlflow_db)) is not None:
        yield Finding(layout.mlflow_db, problem, "the MLflow store is damaged (experiments, "
                      "registered models): restore mlflow/ from a backup")


def sqlite_problem(path: Path) -> str | None:
    """What SQLite says is wrong with the database ``path`` (opened read-only), or None."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        return f"SQLite cannot open it: {error}"
    try:
        results = [row[0] for row in connection.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as error:
        return f"SQLite cannot read it: {error}"
    finally:
        connection.close()
    return None if results == ["ok"] else "SQLite quick_check: " + "; ".join(results[:5])


def check_model_artifacts(folder: Path) -> Iterator[Finding]:
    action = ("retrain or re-register the model, or restore the file from a backup; a "
              "deployed model whose file is damaged cannot be served")
    for path in sorted(folder.rglob(f"*{WEIGHTS_SUFFIX}")) if folder.is_dir() else []:
        if (problem := weights_problem(path)) is not None:
            yield Finding(path, problem, action)


def weights_problem(path: Path) -> str | None:
    """What is wrong with the ``torch.save`` archive ``path`` (truncated, overwritten), or
    None when its zip index opens and every member's header is where the index says."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as handle:
                    handle.read(1)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"not a whole model archive ({type(error).__name__}: {error})"
    return None
