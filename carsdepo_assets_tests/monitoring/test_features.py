"""Image and prediction features: each responds to what it claims to measure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from carsdepo_assets.detection.types import Detection
from carsdepo_assets.monitoring.features import (
    IMAGE_FEATURES,
    PREDICTION_FEATURES,
    image_features,
    image_features_from_path,
    iter_image_features,
    prediction_features,
)
from carsdepo_assets.synth import image_rng, render_panel
from carsdepo_assets.taxonomy import NONE_ANSWER


@pytest.fixture(scope="module")
def panel() -> Image.Image:
    image, _ = render_panel(image_rng(7, 0), 320, 240, "normal", damaged=True)
    return image


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    return Image.fromarray((np.asarray(image, dtype=np.float32) * factor).astype(np.uint8))


def test_features_of_a_panel_are_finite_and_in_their_documented_ranges(panel) -> None:
    features = image_features(panel)
    assert tuple(features) == IMAGE_FEATURES
    assert all(math.isfinite(value) for value in features.values())
    for unit_interval in ("brightness_mean", "brightness_std", "contrast", "saturation_mean"):
        assert 0.0 <= features[unit_interval] <= 1.0
    assert -180.0 < features["hue_mean"] <= 180.0
    assert 0.0 < features["entropy"] <= 8.0
    assert (features["width"], features["height"]) == (320.0, 240.0)


def test_a_darker_photo_has_lower_brightness_and_contrast(panel) -> None:
    normal, dark = image_features(panel), image_features(_scaled(panel, 0.4))
    assert dark["brightness_mean"] == pytest.approx(0.4 * normal["brightness_mean"], rel=0.05)
    assert dark["contrast"] < normal["contrast"]


def test_a_blurred_photo_has_lower_sharpness(panel) -> None:
    blurred = panel.filter(ImageFilter.GaussianBlur(3))
    assert image_features(blurred)["sharpness"] < 0.2 * image_features(panel)["sharpness"]


@pytest.mark.parametrize(
    ("colour", "hue"), [((200, 20, 20), 0.0), ((20, 200, 20), 120.0), ((20, 20, 200), -120.0)]
)
def test_hue_is_the_circular_mean_centred_on_red(colour, hue) -> None:
    features = image_features(Image.new("RGB", (64, 48), colour))
    assert features["hue_mean"] == pytest.approx(hue, abs=2.0)


def test_a_grey_photo_has_no_saturation_and_hue_zero() -> None:
    features = image_features(Image.new("RGB", (64, 48), (128, 128, 128)))
    assert features["saturation_mean"] == 0.0
    assert features["hue_mean"] == 0.0


def test_red_hues_either_side_of_zero_average_to_red_not_cyan() -> None:
    """A naive mean of hues 350 and 10 degrees would be 180 (cyan)."""
    image = Image.new("HSV", (64, 48), (248, 255, 200))  # about 350 degrees
    image.paste(Image.new("HSV", (32, 48), (7, 255, 200)), (0, 0))  # about 10 degrees
    assert abs(image_features(image.convert("RGB"))["hue_mean"]) < 5.0


def test_large_jpeg_gives_the_same_features_from_path_and_from_memory(tmp_path: Path) -> None:
    """The path reader decodes at reduced scale; both entry points must agree."""
    image, _ = render_panel(image_rng(3, 1), 1280, 1040, "normal", damaged=True)
    path = tmp_path / "large.jpg"
    image.save(path, quality=90)
    from_path = image_features_from_path(path)
    with Image.open(path) as opened:
        from_memory = image_features(opened)
    for name in IMAGE_FEATURES:
        assert from_path[name] == pytest.approx(from_memory[name], rel=0.03, abs=0.5), name
    assert (from_path["width"], from_path["height"]) == (1280.0, 1040.0)


def test_an_unreadable_file_is_named_in_the_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="broken.jpg"):
        list(iter_image_features([broken]))


def test_the_none_answer_has_no_detections_and_no_score() -> None:
    features = prediction_features(NONE_ANSWER)
    assert tuple(features) == PREDICTION_FEATURES
    assert features["detections"] == 0.0 and features["is_none"] == 1.0
    assert math.isnan(features["mean_score"])


def test_detections_as_dicts_or_objects_give_count_and_mean_score() -> None:
    as_dicts = [{"label": "scratch", "score": 0.9, "box": [0, 0, 5, 5]},
                {"label": "dent", "score": 0.5, "box": [1, 1, 9, 9]}]
    as_objects = [Detection("scratch", 0.9, (0, 0, 5, 5)), Detection("dent", 0.5, (1, 1, 9, 9))]
    expected = {"detections": 2.0, "mean_score": pytest.approx(0.7), "is_none": 0.0,
                "max_score": 0.9, "boxes_scratch": 1.0, "boxes_dent": 1.0}
    assert prediction_features(as_dicts) == expected
    assert prediction_features(as_objects) == expected


def test_max_score_below_the_threshold_is_kept_for_a_none_answer() -> None:
    """batch_predictions records the best candidate even when the answer is "None"."""
    features = prediction_features(NONE_ANSWER, max_score=0.42)
    assert (features["max_score"], features["is_none"]) == (0.42, 1.0)
    assert features["boxes_scratch"] == features["boxes_dent"] == 0.0


@pytest.mark.parametrize("bad", ["scratch", [{"label": "dent"}], [{"score": 1.5}],
                                 [{"label": "rust", "score": 0.5}]])
def test_a_malformed_prediction_is_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match="None|score|label"):
        prediction_features(bad)
