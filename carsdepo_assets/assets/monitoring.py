"""Monitoring: whylogs profiles of the reference and of each batch, drift, and the decision.

Profiles are whylogs binaries under ``profiles/``; drift reports and decisions are also written
as JSON under ``reports/`` so the KPI report and people can read them without Dagster.

Three signals are profiled (``monitoring/drift.py``): light (image statistics), content (the
champion's backbone embedding of each photo, projected on the PCA fitted on the reference and
saved beside it as ``profiles/reference-content.npz``) and outputs (the champion's answers, for
a batch that ``batch_predictions`` answered). While there is no champion, the reference and
the batches have light features only, and the drift report says so.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
# MLflow and torch are imported by the functions that use them: the code location loads
# without them.

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from PIL import Image
from pydantic import Field

from carsdepo_assets.datasets import latest_dataset, load_dataset
from carsdepo_assets.detection.types import damage_answer
from carsdepo_assets.fileio import atomic_write_json
from carsdepo_assets.images.ingest import iter_stored_images
from carsdepo_assets.images.store import sha256_hex
from carsdepo_assets.monitoring import drift as drift_statistics
from carsdepo_assets.monitoring.decision import decide
from carsdepo_assets.monitoring.drift import DriftReport, drift_plot
from carsdepo_assets.monitoring.embedding import (
    DEFAULT_COMPONENTS,
    Projection,
    fit_reference_content,
    is_content_feature,
)
from carsdepo_assets.monitoring.features import (
    PREDICTION_FEATURES,
    image_features_from_path,
    prediction_features,
)
from carsdepo_assets.monitoring.profiles import (
    profile_rows,
    read_profile,
    row_count,
    summary_table,
    write_profile,
)
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.monitoring import DriftPolicy
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout
from carsdepo_assets.visual import markdown_image

if TYPE_CHECKING:
    from carsdepo_assets.detection.backends import TrainedDetector
    from carsdepo_assets.detection.embeddings import ImageEmbedder
    from carsdepo_assets.monitoring.whylogs_compat import DatasetProfileView

GROUP = "monitoring"
CONTENT_PROJECTION_FILE = "reference-content.npz"
EMBED_CHUNK = 8  # images embedded or answered at once: one chunk in memory
NO_CHAMPION_NOTE = ("Content and outputs not profiled: there was no champion when the "
                    "reference was made, so only light features are compared.")
NO_PREDICTIONS_NOTE = ("Outputs not compared: batch_predictions has not answered for this batch "
                       "(materialize it, then batch_profile and drift_report again).")


def content_projection_path(layout: StateLayout) -> Path:
    """Where the reference's content projection lives, beside the reference profile."""
    return layout.reference_profile_path().with_name(CONTENT_PROJECTION_FILE)


def champion_embedder(model_name: str, version: str,
                      detector: "TrainedDetector | None" = None) -> "ImageEmbedder":
    """The backbone of a registered detector version, loaded as ``batch_predictions`` does
    (unless ``detector``, that version already loaded, is given)."""
    from carsdepo_assets.detection.embeddings import ImageEmbedder
    from carsdepo_assets.prediction.models import ModelRef
    from carsdepo_assets.prediction.pyfunc import load_registered_detector

    model = ModelRef(model_name, version)
    return ImageEmbedder.of_detector(detector or load_registered_detector(model.uri), str(model))


def output_reference_rows(detector: "TrainedDetector", paths: Sequence[Path],
                          other_features: Sequence[str]) -> list[dict[str, float]]:
    """The detector's output features on held-out photos, answered as ``batch_predictions``
    answers (operating threshold, best candidate's score), with ``other_features`` NaN."""
    absent = dict.fromkeys(other_features, math.nan)
    rows = []
    for start in range(0, len(paths), EMBED_CHUNK):
        images = []
        for path in paths[start:start + EMBED_CHUNK]:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except OSError as error:
                raise Failure(f"cannot read reference photo {path}: {error}") from error
        for found in detector.predict(images):
            answer = damage_answer(found, detector.config.score_threshold)
            best = max((item.score for item in found), default=0.0)
            rows.append({**absent, **prediction_features(answer, best)})
    return rows


def light_and_embeddings(
    paths: Sequence[Path], embedder: "ImageEmbedder | None"
) -> Iterator[tuple[dict[str, float], np.ndarray | None]]:
    """Image features and (with an embedder) the embedding of each file, in one streaming pass
    of :data:`EMBED_CHUNK` images at a time."""
    for start in range(0, len(paths), EMBED_CHUNK):
        chunk = [Path(path) for path in paths[start:start + EMBED_CHUNK]]
        rows = [image_features_from_path(path) for path in chunk]
        vectors = (embedder.embed([embedder.open(path) for path in chunk]) if embedder
                   else [None] * len(chunk))
        yield from zip(rows, vectors, strict=True)


def batch_feature_rows(layout: StateLayout, batch: str,
                       content: "tuple[ImageEmbedder, Projection] | None" = None):
    """Image features of each stored image of the batch, one chunk in memory at a time, with
    the content features when ``content`` (embedder, projection) is given and the model-output
    features when ``batch_predictions`` has answered for the batch."""
    answers = _predictions_by_sha(layout.prediction_path(batch))
    stored = list(iter_stored_images(layout, batch))
    embedder, projection = content if content else (None, None)
    pairs = light_and_embeddings([path for _, path in stored], embedder)
    for (sha, _), (features, vector) in zip(stored, pairs, strict=True):
        if projection is not None:
            features = {**features, **projection.features(vector)}
        if answers:
            damage, max_score = answers.get(sha, ("None", None))
            features = {**features, **prediction_features(damage, max_score)}
        yield features


def batch_content(layout: StateLayout, model_registry: ModelRegistry,
                  log) -> "tuple[tuple[ImageEmbedder, Projection] | None, str]":
    """The embedder and projection the reference's content features were made with, or None
    and why not (no champion at the time, or its model can no longer be loaded)."""
    from mlflow.exceptions import MlflowException

    path = content_projection_path(layout)
    if not path.is_file():
        return None, "not profiled: the reference has no content projection (no champion yet)"
    projection = Projection.load(path)
    name, version = projection.source.get("model_name"), projection.source.get("model_version")
    if not (name and version):
        return None, f"not profiled: {path} does not name the model it was made with"
    model_registry.connect()
    try:
        embedder = champion_embedder(name, version)
    except (MlflowException, OSError, ValueError) as error:  # the batch goes on without
        log.warning(f"content features skipped: cannot load {name} v{version}: {error}")
        return None, f"not profiled: {name} v{version} cannot be loaded ({error})"
    if embedder.dimensions != projection.dimensions:  # a reference made by an older carsdepo
        note = (f"not profiled: the reference's content projection ({path}) was fitted on "
                f"{projection.dimensions}-dimensional embeddings, this carsdepo makes "
                f"{embedder.dimensions}; materialize reference_profile again")
        log.warning(f"content features skipped: {note}")
        return None, note
    return (embedder, projection), (f"{len(projection.feature_names)} components of "
                                    f"{embedder.source}'s backbone embedding")


def _predictions_by_sha(path: Path) -> dict:
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["sha256"]: (row["damage"], row.get("max_score"))
            for row in rows if "sha256" in row and "damage" in row}


class ReferenceProfileConfig(Config):
    """The content projection's size, and how many val photos the champion answers for the
    outputs' reference."""

    content_components: int = Field(
        default=DEFAULT_COMPONENTS, ge=1,
        description="Principal components of the champion's backbone embedding profiled as "
        "content features (each one KS test; more catch subtler changes, at a stricter "
        "Bonferroni bound).")
    output_images: int = Field(
        default=40, ge=0,
        description="Photos of the val split the champion answers, as the reference of its "
        "outputs ('None' share, scores, boxes); 0: outputs are not compared.")


@asset(
    group_name=GROUP,
    deps=[AssetKey("deployed_model"), AssetKey("curated_dataset")],
    kinds={"whylogs"},
    description=(
        "whylogs profile of the image features of the train split the champion was trained on "
        "(the latest curated dataset while there is no champion): what 'normal' looks like. "
        "With a champion: also its backbone embeddings (content) and its answers on val photos "
        "(outputs)."
    ),
)
def reference_profile(
    context: AssetExecutionContext, config: ReferenceProfileConfig, carsdepo_home: CarsdepoHome,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    from mlflow.tracking import MlflowClient

    from carsdepo_assets.detection.champion import current_champion
    from carsdepo_assets.prediction.models import ModelRef
    from carsdepo_assets.prediction.pyfunc import load_registered_detector

    layout = carsdepo_home.layout
    model_registry.connect()
    champion = current_champion(model_registry.model_name)
    dataset = None
    if champion is not None:
        tags = MlflowClient().get_model_version(model_registry.model_name, champion).tags
        version = tags.get("carsdepo.dataset_version")
        if version and layout.dataset_folder(version).is_dir():
            dataset = load_dataset(layout.dataset_folder(version))
    source = f"champion v{champion}'s dataset" if dataset else "latest curated dataset"
    dataset = dataset or latest_dataset(layout)
    if dataset is None:
        raise Failure("no curated dataset yet: materialize curated_dataset first")
    train = dataset.coco("train")
    paths = [dataset.image_root / image["file_name"] for image in train["images"]]
    if not paths:
        raise Failure(f"dataset {dataset.version} has an empty train split: no reference")
    inputs = reference_inputs(layout, dataset.version, champion, config)
    kept = kept_reference(layout, inputs)
    if kept is not None:
        context.log.info(f"reference of {source} {dataset.version} unchanged: kept")
        view = read_profile(layout.reference_profile_path())
        return MaterializeResult(metadata={
            **reference_metadata(layout, view, dataset.version, source, champion, **kept),
            "kept": MetadataValue.text("unchanged since the last materialization (same "
                                       "champion, dataset, settings and files): not profiled "
                                       "again"),
        })
    context.log.info(f"profiling {len(paths)} train images of dataset {dataset.version}")
    detector, embedder = None, None
    if champion is not None:
        detector = load_registered_detector(ModelRef(model_registry.model_name, champion).uri)
        embedder = champion_embedder(model_registry.model_name, champion, detector)
    pairs = list(light_and_embeddings(paths, embedder))
    rows, content = reference_content(layout, pairs, embedder, model_registry.model_name,
                                      champion, config.content_components)
    val = [dataset.image_root / image["file_name"] for image in dataset.coco("val")["images"]]
    rows, outputs = with_output_reference(rows, detector, val[:config.output_images])
    view = profile_rows(rows)
    reference_inputs_path(layout).unlink(missing_ok=True)  # never a record of an older profile
    write_profile(view, layout.reference_profile_path())
    atomic_write_json(reference_inputs_path(layout), {
        **reference_inputs(layout, dataset.version, champion, config),
        "content": content, "outputs": outputs})
    return MaterializeResult(metadata=reference_metadata(
        layout, view, dataset.version, source, champion, content, outputs))


def reference_inputs_path(layout: StateLayout) -> Path:
    return layout.reference_profile_path().with_suffix(".inputs.json")


def reference_inputs(layout: StateLayout, dataset_version: str, champion: str | None,
                     config: ReferenceProfileConfig) -> dict:
    """What the reference profile is made from: the champion, its dataset, the settings, and
    the digests of the profile and content projection as written (a file replaced or removed
    since makes it stale)."""
    digests = {name: sha256_hex(path.read_bytes()) if path.is_file() else None
               for name, path in (("profile", layout.reference_profile_path()),
                                  ("projection", content_projection_path(layout)))}
    return {"dataset_version": dataset_version, "champion": champion,
            "settings": config.model_dump(), "files": digests}


def kept_reference(layout: StateLayout, inputs: dict) -> dict | None:
    """The content and outputs notes of the stored reference when it was made from ``inputs``
    (the dataset_job after a label change, while the champion and its dataset stay the same):
    profiling it again would give the same profile. None: profile it."""
    try:
        recorded = json.loads(reference_inputs_path(layout).read_text())
    except (OSError, ValueError):
        return None
    if inputs["files"]["profile"] is None or any(
            recorded.get(key) != value for key, value in inputs.items()):
        return None
    return {"content": recorded.get("content", ""), "outputs": recorded.get("outputs", "")}


def reference_metadata(layout: StateLayout, view: "DatasetProfileView", dataset_version: str,
                       source: str, champion: str | None, content: str, outputs: str) -> dict:
    return {
        "rows": row_count(view),
        "dataset_version": dataset_version,
        "source": source,
        "champion_version": champion or "none",
        "content": content,
        "outputs": outputs,
        "path": MetadataValue.path(str(layout.reference_profile_path())),
        "summary": MetadataValue.md(summary_table(view)),
    }


def with_output_reference(rows: list[dict], detector: "TrainedDetector | None",
                          held_out: Sequence[Path]) -> tuple[list[dict], str]:
    """The reference rows plus the champion's output features on ``held_out`` photos (ones its
    training never fitted), and what the outputs' reference holds."""
    if detector is None:
        return rows, "not profiled: no champion yet"
    if not held_out:
        return rows, "not profiled: no val photos to answer (empty split, or output_images 0)"
    outputs = output_reference_rows(detector, held_out, tuple(rows[0]))
    absent = dict.fromkeys(PREDICTION_FEATURES, math.nan)
    return ([{**row, **absent} for row in rows] + outputs,
            f"the champion's answers on {len(outputs)} photos of the val split")


def reference_content(layout: StateLayout, pairs: list, embedder: "ImageEmbedder | None",
                      model_name: str, champion: str | None,
                      components: int = DEFAULT_COMPONENTS) -> tuple[list[dict], str]:
    """The reference rows, with content features when there is a champion to embed with; the
    projection is saved (or a stale one removed). Returns the rows and what content holds."""
    path = content_projection_path(layout)
    rows = [row for row, _ in pairs]
    if embedder is None:
        path.unlink(missing_ok=True)
        return rows, "not profiled: no champion yet (light features only)"
    try:
        projection, content_rows = fit_reference_content(
            np.stack([vector for _, vector in pairs]), components,
            source={"model_name": model_name, "model_version": champion,
                    "embedder": embedder.source, "side": embedder.side})
    except ValueError as error:  # too few train images for a projection
        path.unlink(missing_ok=True)
        return rows, f"not profiled: {error}"
    projection.save(path)
    rows = [{**row, **content} for row, content in zip(rows, content_rows, strict=True)]
    return rows, (f"{len(projection.feature_names)} PCA components of {embedder.source}'s "
                  f"backbone embedding ({100 * projection.explained_variance:.0f}% of its "
                  "variance), fitted on half of the reference, profiled on the other half")


@asset(
    group_name=GROUP,
    partitions_def=batch_partitions,
    deps=[AssetKey("raw_images")],
    kinds={"whylogs"},
    description="whylogs profile of a batch's image features (and model outputs when the "
    "batch has predictions), streamed one image at a time.",
)
def batch_profile(
    context: AssetExecutionContext, carsdepo_home: CarsdepoHome, model_registry: ModelRegistry
) -> MaterializeResult:
    layout = carsdepo_home.layout
    batch = context.partition_key
    content, content_note = batch_content(layout, model_registry, context.log)
    view = profile_rows(batch_feature_rows(layout, batch, content))
    rows = row_count(view)
    if rows == 0:
        context.log.warning(f"batch {batch} has no stored images: its profile is empty")
    path = layout.batch_profile_path(batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_profile(view, path)
    return MaterializeResult(metadata={
        "rows": rows,
        "content": content_note,
        "path": MetadataValue.path(str(path)),
        "summary": MetadataValue.md(summary_table(view) if rows else "empty batch"),
    })


@asset(
    group_name=GROUP,
    partitions_def=batch_partitions,
    deps=[AssetKey("batch_profile"), AssetKey("reference_profile")],
    description="Per feature: KS statistic and p-value of the batch against the reference; one "
    "batch deviation score in percent (defined in monitoring/drift.py).",
)
def drift_report(
    context: AssetExecutionContext, carsdepo_home: CarsdepoHome, drift_policy: DriftPolicy
) -> Output[DriftReport | None]:
    layout = carsdepo_home.layout
    batch = context.partition_key
    batch_path = layout.batch_profile_path(batch)
    if not batch_path.is_file():
        raise Failure(f"no profile for batch {batch}: materialize batch_profile[{batch}] first")
    reference_path = layout.reference_profile_path()
    if not reference_path.is_file():
        context.log.warning("no reference profile yet: the batch is not compared")
        atomic_write_json(layout.drift_report_path(batch), {"status": "no_reference"})
        return Output(None, metadata={"status": "no reference profile yet", "deviation": 0.0})
    reference, current = read_profile(reference_path), read_profile(batch_path)
    report = drift_statistics.drift_report(reference, current, alpha=drift_policy.alpha,
                                           notes=signal_notes(reference, current))
    atomic_write_json(layout.drift_report_path(batch), report.to_dict())
    metadata = {
        "status": report.status,
        "deviation": round(report.deviation, 2),
        "drifted": ", ".join(item.feature for item in report.drifted) or "none",
        "moved_signals": ", ".join(report.moved_signals) or "none",
        "report": MetadataValue.md(report.to_markdown()),
    }
    drivers = [item.feature for item in report.top_drivers()]
    if drivers:
        plot = drift_plot(reference, current, drivers)
        metadata["distributions"] = MetadataValue.md(markdown_image(plot, "reference vs batch"))
    return Output(report, metadata=metadata)


def signal_notes(reference, batch) -> tuple[str, ...]:
    """Why the content or outputs signal is absent from a comparison, when it is."""
    notes = []
    if not any(is_content_feature(name) for name in reference.get_columns()):
        notes.append(NO_CHAMPION_NOTE)
    has_outputs = [any(name in view.get_columns() for name in PREDICTION_FEATURES)
                   for view in (reference, batch)]
    if has_outputs == [True, False]:
        notes.append(NO_PREDICTIONS_NOTE)
    return tuple(notes)


@asset(
    group_name=GROUP,
    partitions_def=batch_partitions,
    description="What the batch's drift calls for: no_action, retrain (on the latest curated "
    "dataset), experiment (a sweep of detector configs), or no_reference.",
)
def retraining_decision(
    context: AssetExecutionContext,
    carsdepo_home: CarsdepoHome,
    drift_policy: DriftPolicy,
    drift_report: DriftReport | None,
) -> Output[dict]:
    decision = decide(drift_report, drift_policy.retrain_at, drift_policy.experiment_at)
    record = {"batch": context.partition_key, **decision.to_dict()}
    atomic_write_json(carsdepo_home.layout.decision_path(context.partition_key), record)
    context.log.info(f"batch {context.partition_key}: {decision.action} ({decision.reasons[0]})")
    return Output(record, metadata={
        "action": decision.action,
        "deviation": decision.deviation if decision.deviation is not None else -1.0,
        "moved_signals": ", ".join(decision.moved_signals) or "none",
        "reasons": MetadataValue.md("\n".join(f"- {reason}" for reason in decision.reasons)),
        "retrain_at": drift_policy.retrain_at,
        "experiment_at": drift_policy.experiment_at,
    })
