"""Drift reports on awkward inputs: empty, missing or constant features give a clear report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from carsdepo_assets.monitoring.decision import NO_ACTION, NO_REFERENCE, decide
from carsdepo_assets.monitoring.drift import (
    DRIFT,
    EMPTY_BATCH,
    EMPTY_REFERENCE,
    NO_COMMON_FEATURES,
    NO_DRIFT,
    NOT_TESTED,
    OK,
    POSSIBLE_DRIFT,
    drift_plot,
    drift_report,
)
from carsdepo_assets.monitoring.profiles import profile_rows


def _profile(size: int, seed: int, shift: float = 0.0, width: float = 640.0, **extra):
    values = np.random.default_rng(seed).normal(0.5 + shift, 0.1, size=size)
    return profile_rows({"brightness_mean": float(v), "width": width, **extra} for v in values)


REFERENCE = _profile(200, seed=0, mean_score=0.8)


def _feature(report, name):
    return next(item for item in report.features if item.feature == name)


def test_an_empty_batch_is_reported_and_needs_no_action() -> None:
    report = drift_report(REFERENCE, profile_rows([]))
    assert (report.status, report.deviation, report.features) == (EMPTY_BATCH, 0.0, ())
    assert "the batch has no images" in report.message
    assert decide(report).action == NO_ACTION


def test_an_empty_reference_means_no_reference() -> None:
    report = drift_report(profile_rows([]), _profile(50, seed=1))
    assert report.status == EMPTY_REFERENCE
    assert decide(report).action == NO_REFERENCE


def test_profiles_without_a_common_feature_are_reported() -> None:
    report = drift_report(REFERENCE, profile_rows([{"sharpness": 1.0}] * 10))
    assert report.status == NO_COMMON_FEATURES
    assert report.missing_in_reference == ("sharpness",)


def test_a_feature_missing_in_the_batch_is_listed_and_the_rest_compared() -> None:
    report = drift_report(REFERENCE, _profile(50, seed=1))
    assert report.status == OK
    assert report.missing_in_batch == ("mean_score",)
    assert [item.feature for item in report.features] == ["brightness_mean", "width"]
    assert "Missing in batch (not compared): mean_score" in report.to_markdown()
    assert "not compared, missing in the batch: mean_score" in decide(report).reasons


def test_a_feature_without_values_in_the_batch_is_not_tested_and_reports_as_json() -> None:
    report = drift_report(REFERENCE, _profile(50, seed=1, mean_score=math.nan))
    item = _feature(report, "mean_score")
    assert (item.category, item.note) == (NOT_TESTED, "no values in the batch")
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["features"][1]["batch_median"] is None


def test_a_single_image_on_each_side_is_too_few_for_a_test() -> None:
    single = profile_rows([{"brightness_mean": 0.5}])
    item = _feature(drift_report(single, single), "brightness_mean")
    assert (item.category, item.note) == (NOT_TESTED, "too few values for a KS test")


def test_equal_constant_image_sizes_are_no_drift() -> None:
    item = _feature(drift_report(REFERENCE, _profile(50, seed=1)), "width")
    assert (item.category, item.statistic, item.excess) == (NO_DRIFT, 0.0, 0.0)


def test_a_new_camera_resolution_is_reported_but_does_not_raise_the_deviation() -> None:
    report = drift_report(REFERENCE, _profile(50, seed=1, width=1024.0))
    item = _feature(report, "width")
    assert (item.category, item.statistic, item.scored) == (DRIFT, 1.0, False)
    assert report.deviation == 0.0
    assert "width (not scored)" in report.to_markdown()


def test_a_shifted_batch_scores_its_ks_distance_beyond_the_critical_one() -> None:
    report = drift_report(REFERENCE, _profile(100, seed=1, shift=0.15))
    item = _feature(report, "brightness_mean")
    assert item.category == DRIFT and item.p_value < report.corrected_alpha
    assert report.deviation == pytest.approx(100 * (item.statistic - item.critical))
    assert report.drivers == (item,)


def test_significant_only_before_the_correction_for_several_tests_is_possible_drift() -> None:
    """Two features tested: the per-feature level is alpha / 2; p = 0.037 lies in between."""
    report = drift_report(REFERENCE, _profile(100, seed=1, shift=0.031))
    item = _feature(report, "brightness_mean")
    assert report.corrected_alpha == pytest.approx(0.025)
    assert report.corrected_alpha < item.p_value < report.alpha
    assert (item.category, item.excess, report.deviation) == (POSSIBLE_DRIFT, 0.0, 0.0)


@pytest.mark.parametrize(("reference", "batch", "error"), [
    ({"a": 1}, REFERENCE, TypeError), (REFERENCE, None, TypeError),
])
def test_something_other_than_profiles_is_a_type_error(reference, batch, error) -> None:
    with pytest.raises(error, match="must be a whylogs DatasetProfileView"):
        drift_report(reference, batch)


def test_alpha_outside_zero_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        drift_report(REFERENCE, REFERENCE, alpha=1.5)


def test_drift_plot_draws_a_png_and_refuses_a_feature_without_values() -> None:
    batch = _profile(100, seed=1, shift=0.15)
    png = drift_plot(REFERENCE, batch, ["brightness_mean", "width"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
    with pytest.raises(ValueError, match="batch profile has no values for feature 'mean_score'"):
        drift_plot(REFERENCE, batch, ["mean_score"])
