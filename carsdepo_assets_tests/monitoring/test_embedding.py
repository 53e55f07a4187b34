"""The content projection (PCA of reference embeddings) and the signals of a drift report."""

from __future__ import annotations

import numpy as np
import pytest

from carsdepo_assets.monitoring.decision import decide
from carsdepo_assets.monitoring.drift import CONTENT, LIGHT, OUTPUTS, drift_report, signal_of
from carsdepo_assets.monitoring.embedding import (
    Projection,
    fit_projection,
    fit_reference_content,
)
from carsdepo_assets.monitoring.profiles import profile_rows


def _embeddings(rows: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Embeddings with a few strong directions of variation, like a backbone's."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(99).normal(size=(4, 64))
    weights = rng.normal(size=(rows, 4)) * np.array([5.0, 3.0, 2.0, 1.0])
    return weights @ directions + rng.normal(scale=0.1, size=(rows, 64)) + shift * directions[0]


def test_the_projection_keeps_the_main_directions_with_unit_spread_on_the_reference() -> None:
    reference = _embeddings(300, seed=1)
    projection = fit_projection(reference, components=6, source={"model_version": "3"})

    values = projection.project(reference)
    assert values.shape == (300, 6)
    assert np.allclose(values.std(axis=0, ddof=1), 1.0)
    assert projection.explained_variance > 0.99  # four real directions carry almost everything
    assert projection.feature_names == tuple(f"content_{i:02d}" for i in range(6))
    assert set(projection.features(reference[0])) == set(projection.feature_names)


def test_the_projection_survives_a_round_trip_through_its_file(tmp_path) -> None:
    projection = fit_projection(_embeddings(50, seed=2), components=5,
                                source={"model_name": "m", "model_version": "7"})
    projection.save(tmp_path / "reference-content.npz")
    loaded = Projection.load(tmp_path / "reference-content.npz")

    probe = _embeddings(10, seed=3)
    assert np.allclose(loaded.project(probe), projection.project(probe))
    assert loaded.source == {"model_name": "m", "model_version": "7"}


def test_fewer_reference_images_than_components_keep_fewer_components() -> None:
    assert fit_projection(_embeddings(5, seed=4), components=16).components.shape[0] == 4


@pytest.mark.parametrize(("embeddings", "message"), [
    (np.zeros((2, 8)), "at least 3 reference images"),
    (np.zeros(8), "2-D array"),
    (np.vstack([np.zeros((4, 8)), np.full((1, 8), np.nan)]), r"row\(s\) \[4\]"),
])
def test_unusable_reference_embeddings_are_a_clear_error(embeddings, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_projection(embeddings)


def test_a_batch_embedded_by_another_backbone_is_refused_naming_the_projection(tmp_path) -> None:
    projection = fit_projection(_embeddings(20, seed=5), source={"model_version": "2"})
    with pytest.raises(ValueError, match="32 dimensions.*model_version.*64"):
        projection.project(np.zeros((3, 32)))
    (tmp_path / "broken.npz").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="broken.npz is not a readable content projection"):
        Projection.load(tmp_path / "broken.npz")


def test_features_belong_to_their_signal() -> None:
    assert [signal_of(name) for name in ("brightness_mean", "width", "content_03", "is_none",
                                         "boxes_dent", "max_score")] == [
        LIGHT, LIGHT, CONTENT, OUTPUTS, OUTPUTS, OUTPUTS]


def _light(rng: np.random.Generator) -> dict[str, float]:
    """A light feature that never moves (same distribution in every batch)."""
    return {"brightness_mean": float(rng.normal(0.5, 0.05))}


def _rows(embeddings: np.ndarray, projection: Projection, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{**_light(rng), **projection.features(vector)} for vector in embeddings]


def test_the_reference_is_profiled_on_the_half_the_projection_was_not_fitted_on() -> None:
    """Components fitted on noise overfit their own sample: its spread along them is wider
    than any new sample's, which a KS test would call drift in every clean batch."""
    embeddings = _embeddings(300, seed=6)
    overfitted = fit_projection(embeddings, components=8)
    projection, rows = fit_reference_content(embeddings, components=8)
    held_out = np.array([[row[name] for name in projection.feature_names] for row in rows[1::2]])
    unseen = projection.project(_embeddings(300, seed=9))

    assert all(np.isnan(list(row.values())).all() for row in rows[::2])
    noise = slice(4, 8)  # the components beyond the four real directions
    assert (overfitted.project(embeddings)[:, noise].std(axis=0)
            > 1.1 * overfitted.project(_embeddings(300, seed=9))[:, noise].std(axis=0)).all()
    assert np.allclose(held_out[:, noise].std(axis=0), unseen[:, noise].std(axis=0), rtol=0.25)


def test_a_content_shift_is_reported_as_content_alone_and_decided_by_the_same_rule() -> None:
    projection, content = fit_reference_content(_embeddings(300, seed=6), components=8)
    rng = np.random.default_rng(1)
    reference = profile_rows({**_light(rng), **values} for values in content)
    clean = [drift_report(reference, profile_rows(_rows(_embeddings(60, seed), projection, seed)))
             for seed in range(10, 20)]
    moved = drift_report(reference, profile_rows(_rows(_embeddings(60, seed=8, shift=4.0),
                                                       projection, seed=3)))

    assert {decide(report).action for report in clean} == {"no_action"}
    assert moved.moved_signals == (CONTENT,)
    assert decide(moved).moved_signals == (CONTENT,) and decide(moved).action != "no_action"
    by_signal = {item.signal: item for item in moved.signals}
    assert by_signal[CONTENT].deviation == pytest.approx(moved.deviation)
    assert by_signal[LIGHT].deviation == 0.0 and by_signal[OUTPUTS].tested == 0
    # each signal is its own Bonferroni family: 1 light feature, 8 content components
    assert moved.signal_alpha == {LIGHT: pytest.approx(0.05), CONTENT: pytest.approx(0.05 / 8)}
    payload = moved.to_dict()
    assert payload["moved_signals"] == [CONTENT]
    assert {"deviation", "drifted", "features", "corrected_alpha"} <= set(payload)
    assert "content: moved" in moved.to_markdown()
    assert [item.feature for item in moved.top_drivers(per_signal=2)] == [
        item.feature for item in moved.drivers[:2]]
