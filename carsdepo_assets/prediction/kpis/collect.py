"""The records behind the KPIs, read from the state folder and the MLflow registry (which ones:
the package docstring); a missing record leaves its KPIs empty, with a note."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.labeling.history import load_latest_snapshot
from carsdepo_assets.prediction.batch import read_predictions
from carsdepo_assets.prediction.inference_log import SOURCES, InferenceLog
from carsdepo_assets.prediction.kpis.compute import (
    CHAMPION_METRICS,
    ChampionPoint,
    KpiReport,
    compute_kpis,
)
from carsdepo_assets.state import StateLayout

DEFAULT_LATENCY_DAYS = 30


def collect_kpis(
    layout: StateLayout,
    model_name: str | None = None,
    *,
    latency_days: int = DEFAULT_LATENCY_DAYS,
    today: date | None = None,
) -> KpiReport:
    """Read the records under ``layout`` (and, with ``model_name``, the registry; MLflow must
    be configured) and compute the KPIs."""
    notes: list[str] = []
    held = _images_held(layout, notes)
    answers = _latest_answers(layout, notes)
    snapshot = load_latest_snapshot(layout.annotations)
    if snapshot is None:
        notes.append("no annotation snapshot yet: nothing labelled")
    since = (today or datetime.now(UTC).date()) - timedelta(days=latency_days - 1)
    return compute_kpis(
        held, answers, snapshot.images if snapshot is not None else [],
        _latencies(InferenceLog(layout.inference_log), since, notes),
        champion_history(model_name) if model_name else [],
        _decisions(layout.decisions, notes),
        latency_days, notes,
    )


def champion_history(model_name: str) -> list[ChampionPoint]:
    """Every promotion of ``model_name``, oldest first, with the version's test metrics; after
    a rollback, the restored champion once more at the end."""
    # imported here: MLflow is slow to import, and the code location (kpi_report) loads
    # without it
    from mlflow.tracking import MlflowClient

    from carsdepo_assets.detection.champion import (
        PROMOTED_AT_TAG,
        ROLLED_BACK_AT_TAG,
        current_champion,
    )

    client = MlflowClient()
    points, rolled_back = [], {}
    for version in client.search_model_versions(f"name = '{model_name}'"):
        promoted_at = version.tags.get(PROMOTED_AT_TAG)
        if not promoted_at:
            continue
        run_metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        metrics = {name: round(run_metrics[f"test_{name}"], 4)
                   for name in CHAMPION_METRICS if f"test_{name}" in run_metrics}
        points.append(ChampionPoint(str(version.version), promoted_at, metrics))
        rolled_back[str(version.version)] = version.tags.get(ROLLED_BACK_AT_TAG)
    # promotion times have whole seconds: within one second, the later version came later
    points.sort(key=lambda point: (point.since, int(point.version)))
    champion = current_champion(model_name)
    earlier = [point for point in points if point.version == champion]
    if earlier and points[-1].version != champion:
        since = rolled_back[points[-1].version] or points[-1].since
        points.append(ChampionPoint(champion, since, earlier[-1].metrics, restored=True))
    return points


def _images_held(layout: StateLayout, notes: list[str]) -> set[str]:
    held: set[str] = set()
    for path in sorted(layout.manifests.glob("*.json")):
        try:
            held.update(BatchManifest.load(path).image_hashes())
        except (ValueError, KeyError, TypeError) as error:
            notes.append(f"manifest {path.name} skipped: {type(error).__name__}: {error}")
    if not held:
        notes.append("no stored images yet (no batch manifest)")
    return held


def _latest_answers(layout: StateLayout, notes: list[str]) -> dict[str, str | list[dict]]:
    """The model's answer per image sha256 over every batch's predictions file."""
    answers: dict[str, str | list[dict]] = {}
    for path in sorted(layout.predictions.glob("*.jsonl")):
        try:
            for row in read_predictions(path):
                if "damage" in row:
                    answers[row["sha256"]] = row["damage"]
        except (ValueError, KeyError) as error:
            notes.append(f"predictions {path.name} partly skipped: {error}")
    if not answers:
        notes.append("no batch predictions yet")
    return answers


def _latencies(log: InferenceLog, since: date, notes: list[str]) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {source: [] for source in SOURCES}
    bad: list[str] = []
    for record in log.read(since, on_bad_line=lambda path, n, _: bad.append(f"{path.name}:{n}")):
        if record.error is None:
            latencies[record.source].append(record.latency_ms)
    if bad:
        notes.append(f"{len(bad)} unreadable inference log lines skipped ({', '.join(bad[:3])})")
    return latencies


def _decisions(folder: Path, notes: list[str]) -> dict[str, int]:
    actions: Counter[str] = Counter()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            actions[str(json.loads(path.read_text())["action"])] += 1
        except (ValueError, KeyError, TypeError) as error:
            notes.append(f"decision {path.name} skipped: {type(error).__name__}: {error}")
    if not folder.is_dir():
        notes.append(f"no retraining decisions recorded yet ({folder.name}/ is absent)")
    return dict(sorted(actions.items()))
