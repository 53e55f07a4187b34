"""Lighting and camera: how a rendered panel becomes a photo.

The panel renderer produces linear radiance; a ``Lighting`` preset decides how a camera turns it
into an 8-bit photo (exposure, contrast, colour temperature, sensor noise). Presets other than
"normal" stand for the drift cases of the monitoring stage: a dim batch is a moderate shift in
brightness, a very dim one a strong shift with more noise, a harsh one over-exposed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_TEMPERATURE_K = 6500.0
# How strongly a colour temperature away from daylight tints the photo once the camera's auto
# white balance has corrected most of it.
_RESIDUAL_TINT = 0.22
_GAMMA = 1 / 2.2
_METER_TARGET = 0.25  # mean linear luminance a camera's light meter aims for
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 luminance weights


@dataclass(frozen=True)
class Lighting:
    """Photo conditions of a batch; the jitters give natural variety between photos.

    ``exposure`` multiplies linear radiance, ``contrast`` stretches display values around
    mid-grey, ``temperature_k`` tints (below 6500 K warmer, above cooler) and ``noise`` is the
    standard deviation of sensor noise in display units (0..1).
    """

    name: str
    exposure: float
    contrast: float
    temperature_k: float
    noise: float
    exposure_jitter: float = 0.15
    temperature_jitter_k: float = 600.0

    def __post_init__(self) -> None:
        for field_name in ("exposure", "contrast", "temperature_k"):
            if not getattr(self, field_name) > 0:
                raise ValueError(f"Lighting {self.name!r}: {field_name} must be positive")
        if self.noise < 0 or self.exposure_jitter < 0 or self.temperature_jitter_k < 0:
            raise ValueError(f"Lighting {self.name!r}: noise and jitters must not be negative")


LIGHTING_PRESETS: dict[str, Lighting] = {
    preset.name: preset
    for preset in (
        Lighting("normal", exposure=1.0, contrast=1.0, temperature_k=6200.0, noise=0.012),
        Lighting("dim", exposure=0.77, contrast=1.0, temperature_k=6200.0, noise=0.012),
        Lighting("very-dim", exposure=0.05, contrast=0.9, temperature_k=3800.0, noise=0.04),
        Lighting("harsh", exposure=1.35, contrast=1.35, temperature_k=7000.0, noise=0.010),
    )
}


def resolve_lighting(lighting: str | Lighting) -> Lighting:
    """A preset by name, or the given ``Lighting`` unchanged."""
    if isinstance(lighting, Lighting):
        return lighting
    try:
        return LIGHTING_PRESETS[lighting]
    except KeyError:
        known = ", ".join(LIGHTING_PRESETS)
        raise ValueError(f"unknown lighting {lighting!r}; choose one of: {known}") from None


def white_balance_gains(temperature_k: float) -> np.ndarray:
    """Per-channel gains of a residual colour cast, luminance-neutral (6500 K -> no cast)."""
    shift = _RESIDUAL_TINT * (REFERENCE_TEMPERATURE_K / temperature_k - 1.0)
    gains = np.array([1.0 + shift, 1.0, 1.0 - shift], dtype=np.float32).clip(0.2, None)
    return gains / float(gains @ LUMA)


def to_display(radiance: np.ndarray) -> np.ndarray:
    """Display brightness of linear radiance (1 = full scale), before the sensor clips it."""
    return np.power(np.maximum(radiance, 0.0), np.float32(_GAMMA), dtype=np.float32)


def meter(radiance: np.ndarray) -> float:
    """Exposure correction a camera's light meter would apply to this scene.

    Only partial (the square root of a full correction), so that a white car still looks
    brighter than a black one, but a white car in bright reflections is not burnt out.
    """
    luminance = float((radiance[::8, ::8] @ LUMA).mean())
    return float(np.clip(np.sqrt(_METER_TARGET / max(luminance, 1e-4)), 0.5, 2.0))


def develop(
    radiance: np.ndarray, lighting: Lighting, rng: np.random.Generator, metered: float = 1.0
) -> np.ndarray:
    """Turn linear radiance (H, W, 3) into an 8-bit photo under ``lighting``.

    ``metered`` is the camera's exposure correction (see ``meter``). Draws this photo's exposure
    jitter, tint, vignetting and noise from ``rng``.
    """
    height, width, _ = radiance.shape
    jitter = float(np.exp(rng.normal(0.0, lighting.exposure_jitter)))
    exposure = lighting.exposure * metered * jitter
    temperature = lighting.temperature_k + rng.normal(0.0, lighting.temperature_jitter_k)
    gains = white_balance_gains(max(temperature, 1500.0)) * np.float32(exposure)
    vignette = _vignette(width, height, strength=float(rng.uniform(0.0, 0.3)))
    noise_sigma = lighting.noise * float(rng.uniform(0.8, 1.25))

    display = radiance * gains
    display *= vignette[..., None]
    np.clip(display, 0.0, 1.0, out=display)
    np.power(display, np.float32(_GAMMA), out=display)
    if lighting.contrast != 1.0:
        display -= np.float32(0.5)
        display *= np.float32(lighting.contrast)
        display += np.float32(0.5)
    # Mostly luminance noise; weaker colour noise, uniform because that is cheaper to draw.
    luma_noise = rng.standard_normal((height, width, 1), dtype=np.float32)
    luma_noise *= np.float32(0.9 * noise_sigma * 255)
    chroma_noise = rng.random((height, width, 3), dtype=np.float32)
    chroma_noise -= np.float32(0.5)
    chroma_noise *= np.float32(1.2 * noise_sigma * 255)
    display *= np.float32(255)
    display += luma_noise
    display += chroma_noise
    display += np.float32(0.5)
    return np.clip(display, 0, 255, out=display).astype(np.uint8)


def _vignette(width: int, height: int, strength: float) -> np.ndarray:
    """Light fall-off towards the corners, as from a real lens."""
    xs = (np.arange(width, dtype=np.float32) - width / 2) / (width / 2)
    ys = (np.arange(height, dtype=np.float32) - height / 2) / (height / 2)
    radius2 = (xs[None, :] ** 2 + ys[:, None] ** 2) / 2.0
    return 1.0 - np.float32(strength) * radius2
