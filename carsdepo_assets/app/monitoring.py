"""What the monitoring page shows: per batch, the retraining decision with the drift signals
that moved it, read from the JSON files the monitoring assets write under ``reports/``, and a
picture of reference vs batch drawn from the whylogs profiles under ``profiles/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from carsdepo_assets.monitoring.drift import DRIFT, drift_plot
from carsdepo_assets.monitoring.profiles import read_profile
from carsdepo_assets.state import StateLayout

PLOTTED_FEATURES = 3  # the signals drawn per batch, largest contribution first


@dataclass(frozen=True)
class BatchDecision:
    """One batch's decision (``no_action``, ``retrain``, ``experiment``, ``no_reference``),
    why, the signals that moved (light, content, outputs) and the features that moved most
    (drifted ones first, largest share first)."""

    batch: str
    action: str
    deviation: float | None
    reasons: tuple[str, ...]
    decided_at: datetime
    moved_signals: tuple[str, ...]
    moved: tuple[str, ...]
    drifted: tuple[str, ...]


def batch_decisions(layout: StateLayout) -> tuple[list[BatchDecision], list[str]]:
    """Every recorded decision, newest first, and one line per decision file that could not
    be read (which file, why)."""
    folder = layout.decisions
    decisions: list[BatchDecision] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            decisions.append(_decision(layout, path, record))
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{path}: {type(error).__name__}: {error}")
    decisions.sort(key=lambda item: item.decided_at, reverse=True)
    return decisions, problems


def drift_picture(layout: StateLayout, decision: BatchDecision) -> bytes | None:
    """PNG of the reference vs the batch for the features that moved; None when a profile
    is missing or nothing moved. The reference is the current one: a later champion may have
    replaced the reference the decision was made against."""
    reference, batch = layout.reference_profile_path(), layout.batch_profile_path(decision.batch)
    if not (decision.moved and reference.is_file() and batch.is_file()):
        return None
    return drift_plot(read_profile(reference), read_profile(batch), decision.moved)


def _decision(layout: StateLayout, path: Path, record: dict) -> BatchDecision:
    batch = str(record.get("batch") or path.stem)
    drifted, moved = _signals(layout.drift_report_path(batch))
    deviation = record.get("deviation")
    return BatchDecision(
        batch=batch,
        action=str(record["action"]),
        deviation=None if deviation is None else float(deviation),
        reasons=tuple(str(reason) for reason in record.get("reasons", ())),
        decided_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
        moved_signals=tuple(str(signal) for signal in record.get("moved_signals", ())),
        moved=moved,
        drifted=drifted,
    )


def _signals(report_path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(drifted features, the features to draw) of a drift report; none without a report."""
    if not report_path.is_file():
        return (), ()
    features = json.loads(report_path.read_text()).get("features", [])
    scored = [item for item in features if item.get("scored", True)]
    ranked = sorted(scored, key=lambda item: (item.get("category") != DRIFT,
                                              -float(item.get("excess") or 0.0)))
    drifted = tuple(item["feature"] for item in ranked if item.get("category") == DRIFT)
    return drifted, tuple(item["feature"] for item in ranked[:PLOTTED_FEATURES])
