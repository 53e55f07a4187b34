"""The decision rule and the freshness rule, as pure functions (no profiles, no Dagster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carsdepo_assets.monitoring.decision import (
    ACTIONS,
    EXPERIMENT,
    NO_ACTION,
    NO_REFERENCE,
    RETRAIN,
    Thresholds,
    decide,
)
from carsdepo_assets.monitoring.drift import (
    DRIFT,
    EMPTY_BATCH,
    EMPTY_REFERENCE,
    OK,
    DriftReport,
    FeatureDrift,
)
from carsdepo_assets.monitoring.freshness import model_staleness


def _report(deviation: float, status: str = OK, message: str = "drift in brightness_mean",
            scored: bool = True) -> DriftReport:
    feature = FeatureDrift("brightness_mean", DRIFT, statistic=0.4, p_value=1e-6, critical=0.3,
                           excess=deviation / 100, scored=scored, reference_median=0.5,
                           batch_median=0.35)
    return DriftReport(status, message, deviation=deviation, alpha=0.05, corrected_alpha=0.007,
                       reference_rows=200, batch_rows=60, features=(feature,))


@pytest.mark.parametrize(
    ("deviation", "action"),
    [(0.0, NO_ACTION), (4.99, NO_ACTION), (5.0, RETRAIN), (10.0, RETRAIN), (10.01, EXPERIMENT)],
)
def test_default_thresholds_split_deviation_into_three_actions(deviation, action) -> None:
    decision = decide(_report(deviation))
    assert decision.action == action and action in ACTIONS
    assert decision.deviation == deviation
    assert decision.thresholds == Thresholds(5.0, 10.0)


def test_thresholds_are_configuration() -> None:
    assert decide(_report(12.0), retrain_at=15.0, experiment_at=30.0).action == NO_ACTION
    assert decide(_report(20.0), retrain_at=15.0, experiment_at=30.0).action == RETRAIN


def test_reasons_name_the_rule_and_the_drifted_feature_with_its_amounts() -> None:
    rule, feature = decide(_report(7.0)).reasons
    assert rule == "deviation 7.0% is within [5%, 10%]"
    assert feature.startswith("brightness_mean: 7.0% beyond chance (KS D=0.400")
    assert "median 0.5 -> 0.35 (-30%)" in feature


def test_drift_only_in_unscored_features_is_explained() -> None:
    decision = decide(_report(0.0, scored=False))
    assert decision.action == NO_ACTION
    assert "do not count towards the score: brightness_mean" in decision.reasons[1]


def test_no_reference_yet_is_a_decision_not_a_crash() -> None:
    decision = decide(None)
    assert (decision.action, decision.deviation) == (NO_REFERENCE, None)
    assert "no reference profile exists yet" in decision.reasons[0]


def test_an_empty_reference_counts_as_no_reference() -> None:
    report = _report(0.0, EMPTY_REFERENCE, "the reference profile is empty (0 rows)")
    assert decide(report).action == NO_REFERENCE


def test_an_empty_batch_needs_no_action_and_says_why() -> None:
    decision = decide(_report(0.0, EMPTY_BATCH, "the batch profile is empty (0 rows)"))
    assert decision.action == NO_ACTION
    assert decision.reasons == ("not compared: the batch profile is empty (0 rows)",)


@pytest.mark.parametrize(("retrain_at", "experiment_at"), [(10.0, 5.0), (-1.0, 5.0)])
def test_inconsistent_thresholds_are_rejected(retrain_at, experiment_at) -> None:
    with pytest.raises(ValueError, match="0 <= retrain_at <= experiment_at"):
        decide(None, retrain_at=retrain_at, experiment_at=experiment_at)


NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("champion_age_days", "annotation_age_days", "stale", "reason"),
    [
        (3, 1, False, "champion is 3.0 days old (limit 7 days)"),
        (10, 12, False, "but no annotation is newer than it"),
        (10, None, False, "but no annotation is newer than it"),
        (10, 2, True, "champion is 10.0 days old (limit 7 days) and annotations up to"),
        (None, 2, True, "no champion model yet, and annotations exist"),
        (None, None, False, "no champion model and no annotations yet"),
    ],
)
def test_champion_is_stale_only_when_old_and_newer_annotations_exist(
    champion_age_days, annotation_age_days, stale, reason
) -> None:
    def ago(days):
        return None if days is None else NOW - timedelta(days=days)

    result = model_staleness(ago(champion_age_days), ago(annotation_age_days), NOW, 7)
    assert result[0] is stale
    assert reason in result[1]


def test_naive_datetimes_and_a_non_positive_limit_are_rejected() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        model_staleness(NOW, NOW, datetime(2025, 6, 30), 7)
    with pytest.raises(ValueError, match="max_age_days must be positive"):
        model_staleness(NOW, NOW, NOW, 0)
