"""Calibration on synthetic photos: no false alarms in normal light, and the seed design's
three decisions (normal -> no action, somewhat dim -> retrain, very dim -> experimentation).

Photos are small (208x160, the generator's minimum is 160 per side), JPEG-encoded like real
uploads, and their features computed once per module.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from carsdepo_assets.monitoring.decision import EXPERIMENT, NO_ACTION, RETRAIN, decide
from carsdepo_assets.monitoring.drift import drift_plot, drift_report
from carsdepo_assets.monitoring.features import image_features
from carsdepo_assets.monitoring.profiles import profile_rows
from carsdepo_assets.synth import LIGHTING_PRESETS, Lighting, image_rng, render_panel

SIZE = (208, 160)
# About 10% darker photos than normal light: a moderate shift that the default thresholds
# should answer with retraining. (The "dim" preset is far darker; see the monitoring notes.)
SOMEWHAT_DIM = dataclasses.replace(LIGHTING_PRESETS["normal"], name="somewhat-dim", exposure=0.8)


def _features(seed: int, count: int, lighting: str | Lighting) -> list[dict[str, float]]:
    rows = []
    for index in range(count):
        rng = image_rng(seed, index)
        image, _ = render_panel(rng, *SIZE, lighting, damaged=bool(rng.random() >= 0.25))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        rows.append(image_features(Image.open(buffer)))
    return rows


@pytest.fixture(scope="module")
def reference():
    return profile_rows(_features(seed=0, count=200, lighting="normal"))


@pytest.fixture(scope="module")
def normal_pool() -> list[dict[str, float]]:
    """Normal-light photos generated independently of the reference."""
    return _features(seed=1, count=400, lighting="normal")


def test_same_distribution_batches_of_realistic_sizes_never_trigger(reference, normal_pool):
    """20 random batches of 30 to 200 photos drawn from the independent normal-light pool."""
    deviations = []
    for draw, size in enumerate([30, 50, 100, 200] * 5):
        picks = np.random.default_rng(draw).choice(len(normal_pool), size, replace=False)
        report = drift_report(reference, profile_rows(normal_pool[i] for i in picks))
        decision = decide(report)
        assert decision.action == NO_ACTION, (draw, size, decision.reasons)
        deviations.append(report.deviation)
    assert max(deviations) < 5.0


def test_a_somewhat_dim_batch_triggers_retraining_because_of_brightness(reference):
    report = drift_report(reference, profile_rows(_features(502, 200, SOMEWHAT_DIM)))
    decision = decide(report)
    assert decision.action == RETRAIN, decision.reasons
    assert report.drivers[0].feature == "brightness_mean"
    assert report.drivers[0].batch_median < report.drivers[0].reference_median


def test_a_very_dim_batch_triggers_experimentation_and_its_plot_shows_the_drift(reference):
    batch = profile_rows(_features(600, 60, "very-dim"))
    report = drift_report(reference, batch)
    decision = decide(report)
    assert decision.action == EXPERIMENT, decision.reasons
    assert {"brightness_mean", "contrast"} <= {item.feature for item in report.drifted}
    png = drift_plot(reference, batch, [item.feature for item in report.drivers])
    assert png.startswith(b"\x89PNG")
