"""``render_panel``: boxes sit tight around what was drawn, lighting shifts brightness as named."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from carsdepo_assets.synth import LIGHTING_PRESETS, Lighting, image_rng, render_panel
from carsdepo_assets.synth.damage import MIN_BOX_SIDE
from carsdepo_assets.taxonomy import CLASS_NAMES

# Damage rendered against its undamaged twin: the same panel, camera and noise, pixel for pixel.
TWIN_SEEDS = range(12)


@functools.cache
def render_twins(index: int):
    """How much each pixel changes with damage (0..255), and the damage's boxes."""
    damaged, boxes = render_panel(image_rng(101, index), 640, 480, "normal", damaged=True)
    clean, no_boxes = render_panel(image_rng(101, index), 640, 480, "normal", damaged=False)
    change = np.abs(np.asarray(damaged, np.int16) - np.asarray(clean, np.int16)).max(axis=2)
    assert no_boxes == []
    return change, boxes


@pytest.mark.parametrize("index", TWIN_SEEDS)
def test_boxes_lie_inside_the_image_with_a_usable_size(index):
    _, boxes = render_twins(index)
    assert boxes, "a damaged panel shows at least one damage"
    for label, (x, y, w, h) in boxes:
        assert label in CLASS_NAMES
        assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480
        assert min(w, h) >= MIN_BOX_SIDE


@pytest.mark.parametrize("index", TWIN_SEEDS)
def test_every_clearly_visible_change_is_inside_a_box(index):
    change, boxes = render_twins(index)
    covered = np.zeros_like(change, dtype=bool)
    for label, (x, y, w, h) in boxes:
        covered[y : y + h, x : x + w] = True
        assert change[y : y + h, x : x + w].max() > 20, f"nothing visible in the {label} box"
    assert change[~covered].max(initial=0) <= 20  # only faint fringes (< 8% grey) outside


@pytest.mark.parametrize("index", TWIN_SEEDS)
def test_boxes_are_no_larger_than_the_damage_they_hold(index):
    """Inside each box the damage reaches every side (within two pixels): the box is tight."""
    change, boxes = render_twins(index)
    for label, (x, y, w, h) in boxes:
        rows = np.flatnonzero((change[y : y + h, x : x + w] > 3).any(axis=1))
        cols = np.flatnonzero((change[y : y + h, x : x + w] > 3).any(axis=0))
        slack = max(2, (MIN_BOX_SIDE + 1) // 2)
        assert rows[0] <= slack and rows[-1] >= h - 1 - slack, (label, (x, y, w, h))
        assert cols[0] <= slack and cols[-1] >= w - 1 - slack, (label, (x, y, w, h))


def test_damage_is_large_enough_to_learn_at_detector_input_sizes():
    """At 640x480, scratches are at least ~40 px long and dents ~20-120 px across."""
    longest = {name: [] for name in CLASS_NAMES}
    for index in range(20):
        _, boxes = render_panel(image_rng(7, index), 640, 480, "normal", damaged=True)
        for label, (_, _, w, h) in boxes:
            longest[label].append(max(w, h))
    assert len(longest["scratch"]) >= 8 and len(longest["dent"]) >= 8
    assert min(longest["scratch"]) >= 35
    assert 20 <= min(longest["dent"]) and max(longest["dent"]) <= 130


def mean_brightness(lighting: str) -> float:
    """Mean grey level of the same 16 panels under ``lighting``."""
    return float(
        np.mean(
            [
                np.asarray(
                    render_panel(image_rng(5, i), 320, 240, lighting, damaged=False)[0]
                ).mean()
                for i in range(16)
            ]
        )
    )


def test_lighting_presets_shift_brightness_as_named():
    normal = mean_brightness("normal")
    assert 0.8 <= mean_brightness("dim") / normal <= 0.93  # ~10-20% darker: medium drift
    assert 0.2 <= mean_brightness("very-dim") / normal <= 0.4  # ~65-75% darker: large drift
    assert mean_brightness("harsh") > normal * 1.1


def test_normal_lighting_varies_between_photos():
    """Batches drawn from one distribution need spread, or every batch would look like drift."""
    means = [
        np.asarray(render_panel(image_rng(9, i), 160, 160, "normal", damaged=False)[0]).mean()
        for i in range(24)
    ]
    assert np.std(means) > 10


def test_unknown_lighting_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="normal, dim, very-dim, harsh"):
        render_panel(image_rng(0, 0), 320, 240, "moonlight")
    assert set(LIGHTING_PRESETS) == {"normal", "dim", "very-dim", "harsh"}


def test_a_custom_lighting_with_impossible_values_is_refused():
    with pytest.raises(ValueError, match="'studio': exposure must be positive"):
        Lighting("studio", exposure=0.0, contrast=1.0, temperature_k=5000.0, noise=0.01)
