"""The retrain-or-experiment rule of the seed design, applied to a batch's drift report.

``deviation < retrain_at``                  -> ``no_action``
``retrain_at <= deviation <= experiment_at`` -> ``retrain`` (on the latest curated dataset)
``deviation > experiment_at``               -> ``experiment`` (a sweep of detector configs)
no usable reference profile                 -> ``no_reference``

Deviation is the batch deviation score of :mod:`carsdepo_assets.monitoring.drift`, in percent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from carsdepo_assets.monitoring.drift import EMPTY_REFERENCE, OK, DriftReport

NO_ACTION = "no_action"
RETRAIN = "retrain"
EXPERIMENT = "experiment"
NO_REFERENCE = "no_reference"
ACTIONS = (NO_ACTION, RETRAIN, EXPERIMENT, NO_REFERENCE)

DEFAULT_RETRAIN_AT = 5.0
DEFAULT_EXPERIMENT_AT = 10.0


@dataclass(frozen=True)
class Thresholds:
    """Deviation thresholds in percent; configuration, not code."""

    retrain_at: float = DEFAULT_RETRAIN_AT
    experiment_at: float = DEFAULT_EXPERIMENT_AT

    def __post_init__(self) -> None:
        if not 0.0 <= self.retrain_at <= self.experiment_at:
            raise ValueError(
                "thresholds must satisfy 0 <= retrain_at <= experiment_at, got "
                f"retrain_at={self.retrain_at}, experiment_at={self.experiment_at}"
            )


@dataclass(frozen=True)
class Decision:
    """What to do about one batch, and why (``reasons`` name features and amounts;
    ``moved_signals`` the signals that drifted: light, content, outputs)."""

    action: str
    deviation: float | None
    reasons: tuple[str, ...]
    thresholds: Thresholds
    moved_signals: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    report: DriftReport | None,
    retrain_at: float = DEFAULT_RETRAIN_AT,
    experiment_at: float = DEFAULT_EXPERIMENT_AT,
) -> Decision:
    """Apply the rule to ``report``; ``None`` means there is no reference profile yet."""
    thresholds = Thresholds(retrain_at, experiment_at)
    if report is None or report.status == EMPTY_REFERENCE:
        why = report.message if report is not None else "no reference profile exists yet"
        return Decision(NO_REFERENCE, None, (f"{why}: nothing to compare the batch with",),
                        thresholds)
    if report.status != OK:
        return Decision(NO_ACTION, None, (f"not compared: {report.message}",), thresholds)

    deviation = report.deviation
    if deviation > experiment_at:
        action, rule = EXPERIMENT, f"deviation {deviation:.1f}% > experiment_at {experiment_at:g}%"
    elif deviation >= retrain_at:
        action, rule = RETRAIN, (f"deviation {deviation:.1f}% is within "
                                 f"[{retrain_at:g}%, {experiment_at:g}%]")
    else:
        action, rule = NO_ACTION, f"deviation {deviation:.1f}% < retrain_at {retrain_at:g}%"
    details = tuple(item.describe() for item in report.drivers)
    if not details and report.drifted:
        unscored = ", ".join(item.feature for item in report.drifted)
        details = (f"drift only in features that do not count towards the score: {unscored}",)
    missing = [f"not compared, missing in the {side}: {', '.join(names)}"
               for side, names in (("batch", report.missing_in_batch),
                                   ("reference", report.missing_in_reference)) if names]
    return Decision(action, deviation, (rule, *details, *missing), thresholds,
                    report.moved_signals)
