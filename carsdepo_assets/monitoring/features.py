"""Per-image features that monitoring profiles and compares between batches.

The set follows whylogs' own image metric (``whylogs.extras.image_metric``: brightness,
saturation and hue statistics plus entropy) and adds what matters for damage photos taken in
varying light: contrast, sharpness, and a hue that averages correctly around the colour circle.

All statistics except width and height are computed on a copy downscaled so that its longer
side is at most ``STATS_SIDE`` pixels. That keeps extraction fast and makes the features
comparable across camera resolutions (sharpness especially depends on scale). A JPEG read from
a path is decoded at a reduced DCT scale (``Image.draft``), which makes large photos cheap; an
in-memory image is first box-reduced by the same factor, so both entry points agree.

Definitions and units: brightness is the grey level (Pillow's ITU-R 601 luma) in [0, 1]:
``brightness_mean`` its mean, ``brightness_std`` its spread (RMS contrast), ``contrast`` its
p95 - p5 range; ``saturation_mean`` the mean HSV saturation in [0, 1]; ``hue_mean`` the
saturation-weighted circular mean hue in degrees in (-180, 180], centred on red so that red
paints do not wrap around (0 for an image without colour); ``sharpness`` the variance of the
Laplacian of the 0-255 grey image; ``entropy`` of the grey histogram in bits (0-8); ``width``
and ``height`` in pixels of the original image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from carsdepo_assets.taxonomy import CLASS_NAMES, NONE_ANSWER

STATS_SIDE = 256
IMAGE_FEATURES: tuple[str, ...] = (
    "brightness_mean",
    "brightness_std",
    "contrast",
    "hue_mean",
    "saturation_mean",
    "sharpness",
    "entropy",
    "width",
    "height",
)
PREDICTION_FEATURES: tuple[str, ...] = (
    "detections", "mean_score", "is_none", "max_score",
    *(f"boxes_{name}" for name in CLASS_NAMES),
)

# JPEGs are decoded at the largest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least this
# long; other images are box-reduced by the same factor so both paths give the same features.
_DECODE_SIDE = 2 * STATS_SIDE
# Below this total saturation weight the hue of an image is undefined (grey, white, black).
_MIN_HUE_WEIGHT = 1e-3


def image_features(image: Image.Image) -> dict[str, float]:
    """The features of one photo, keyed by :data:`IMAGE_FEATURES`; ``image`` is not changed."""
    return _features(image, image.size)


def image_features_from_path(path: Path) -> dict[str, float]:
    """Features of the image file at ``path``; an unreadable file raises naming the path."""
    try:
        with Image.open(path) as image:
            original_size = image.size
            image.draft("RGB", (_DECODE_SIDE, _DECODE_SIDE))  # JPEG only; a no-op otherwise
            return _features(image, original_size)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"cannot compute image features for {path}: {error}") from error


def iter_image_features(paths: Iterable[Path]) -> Iterator[dict[str, float]]:
    """Features of each file in turn: one image in memory at a time, for streaming profiles."""
    for path in paths:
        yield image_features_from_path(Path(path))


def prediction_features(detections: str | Iterable[object],
                        max_score: float | None = None) -> dict[str, float]:
    """Model-output features of one image's answer, keyed by :data:`PREDICTION_FEATURES`.

    ``detections`` is the public answer (``"None"`` or a list of ``{"label", "score", "box"}``
    dicts) or a list of :class:`~carsdepo_assets.detection.types.Detection`. ``mean_score`` is
    NaN when there is no detection: whylogs counts NaNs apart, so the score distribution stays
    the distribution over images that had detections. ``max_score`` is the best candidate's
    score even below the operating threshold, as ``batch_predictions`` records it (how close a
    "None" came to being damage); without it, the best kept score (0 for "None").
    ``boxes_<class>`` count the detections of each class.
    """
    if isinstance(detections, str):
        if detections != NONE_ANSWER:
            raise ValueError(f"a prediction is {NONE_ANSWER!r} or a list of detections, "
                             f"not {detections!r}")
        detections = []
    detections = list(detections)
    scores = [_score_of(item, index) for index, item in enumerate(detections)]
    labels = [_label_of(item, index) for index, item in enumerate(detections)]
    if max_score is not None and not 0.0 <= max_score <= 1.0:
        raise ValueError(f"max_score must be in [0, 1], got {max_score!r}")
    best = max(scores, default=0.0) if max_score is None else float(max_score)
    return {
        "detections": float(len(scores)),
        "mean_score": float(np.mean(scores)) if scores else math.nan,
        "is_none": 0.0 if scores else 1.0,
        "max_score": best,
        **{f"boxes_{name}": float(labels.count(name)) for name in CLASS_NAMES},
    }


def _features(image: Image.Image, original_size: tuple[int, int]) -> dict[str, float]:
    width, height = original_size
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    small = _downscale(_reduce_like_jpeg_draft(image.convert("RGB")))
    grey_image = small.convert("L")
    grey = np.asarray(grey_image, dtype=np.float32)
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)
    p5, p95 = _grey_percentiles(grey_image.histogram(), (0.05, 0.95))
    return {
        "brightness_mean": float(grey.mean() / 255.0),
        "brightness_std": float(grey.std() / 255.0),
        "contrast": float((p95 - p5) / 255.0),
        "hue_mean": _circular_hue(hsv[..., 0], hsv[..., 1]),
        "saturation_mean": float(hsv[..., 1].mean() / 255.0),
        "sharpness": _laplacian_variance(grey),
        "entropy": float(grey_image.entropy()),
        "width": float(width),
        "height": float(height),
    }


def _reduce_like_jpeg_draft(image: Image.Image) -> Image.Image:
    """Box-reduce by the factor Pillow's JPEG ``draft`` would pick for :data:`_DECODE_SIDE`."""
    scale = min(image.width // _DECODE_SIDE, image.height // _DECODE_SIDE)
    factor = next(step for step in (8, 4, 2, 1) if scale >= step or step == 1)
    return image.reduce(factor) if factor > 1 else image


def _downscale(image: Image.Image) -> Image.Image:
    """Area-average to a longer side of at most :data:`STATS_SIDE` (aspect ratio kept)."""
    scale = STATS_SIDE / max(image.size)
    if scale >= 1.0:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def _grey_percentiles(histogram: list[int], shares: tuple[float, ...]) -> list[float]:
    """Grey levels below which the given shares of pixels lie (from the 256-bin histogram)."""
    cumulative = np.cumsum(histogram)
    return [float(np.searchsorted(cumulative, share * cumulative[-1])) for share in shares]


def _score_of(item: object, index: int) -> float:
    score = item.get("score") if isinstance(item, Mapping) else getattr(item, "score", None)
    if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"detection {index} has no score in [0, 1]: {item!r}")
    return float(score)


def _label_of(item: object, index: int) -> str:
    label = item.get("label") if isinstance(item, Mapping) else getattr(item, "label", None)
    if label not in CLASS_NAMES:
        raise ValueError(f"detection {index} has no known label (one of {CLASS_NAMES}): {item!r}")
    return label


def _circular_hue(hue: np.ndarray, saturation: np.ndarray) -> float:
    """Saturation-weighted circular mean of PIL's 0-255 hue, in degrees in (-180, 180].

    Grey pixels carry no hue, hence the weighting; an image without colour reports 0.
    """
    angles = hue * (2.0 * math.pi / 256.0)
    weight = saturation / 255.0
    total = float(weight.sum())
    if total < _MIN_HUE_WEIGHT * weight.size:
        return 0.0
    sine = float((np.sin(angles) * weight).sum())
    cosine = float((np.cos(angles) * weight).sum())
    return math.degrees(math.atan2(sine, cosine))


def _laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurred or flat (very dark) images."""
    if min(grey.shape) < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
                 - 4.0 * centre)
    return float(laplacian.var())
