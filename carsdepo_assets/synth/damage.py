"""Body damage drawn onto a panel: scratches (strokes in the paint) and dents (deformations).

Every box is measured from what was drawn, never from the parameters: it holds the pixels where
the damaged panel visibly differs from the undamaged one. Damage too subtle to see is left out
rather than annotated. Sizes are given for a 640x480 photo and scale with the short side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carsdepo_assets.synth.lighting import LUMA, to_display
from carsdepo_assets.synth.panel import PanelScene, Window, pixel_grid, shade
from carsdepo_assets.taxonomy import DENT, SCRATCH

Box = tuple[int, int, int, int]  # COCO [x, y, w, h] in pixels

# A damage is visible where it changes the photo by more than this (about 10/255 of full scale),
# judged at the camera's metered exposure before lighting presets, clipping and noise (so that
# the boxes of a panel are the same under every lighting).
VISIBLE_CHANGE = 0.04
# It is drawn and annotated only if it changes some pixel by at least this much; a dent also
# needs a visible area at least this many pixels across (at 480 px image height).
MIN_PEAK_CHANGE = 0.1
DENT_MIN_SIDE = 12
MIN_BOX_SIDE = 4  # pixels; a one-pixel-wide scratch still gets a box a detector can match
_SPACING = 8.0  # pixels kept between two damages so that their boxes do not overlap
_PLACEMENT_TRIES = 40
# Below one half because about a quarter of dents land where they are too subtle to see.
_SCRATCH_SHARE = 0.43


@dataclass
class Canvas:
    """A panel being damaged: its scene, undamaged slopes and radiance (drawn on in place)."""

    scene: PanelScene
    slopes: tuple[np.ndarray, np.ndarray]
    radiance: np.ndarray
    exposure: float  # the camera's metered exposure: visibility is judged as photographed

    @property
    def shape(self) -> tuple[int, int]:
        return self.radiance.shape[:2]


@dataclass(frozen=True)
class Dent:
    """A soft, roughly elliptical depression, maybe with a sharper impact point inside.

    Height = -depth * (1 - r^2)^sharpness, where r is 1 on an ellipse whose radius wobbles
    with ``lobes`` bumps of relative size ``wobble``; the impact point adds a small, steeper
    dent of ``core`` times the depth at ``core_at`` (in units of the semi-axes).
    """

    cx: float
    cy: float
    semi_major: float
    semi_minor: float
    angle: float
    depth: float
    sharpness: float
    wobble: float = 0.0
    lobes: int = 2
    wobble_phase: float = 0.0
    core: float = 0.0
    core_at: tuple[float, float] = (0.0, 0.0)

    label = DENT

    def extent(self) -> tuple[float, float, float, float]:
        """Bounding rectangle (x0, y0, x1, y1) of the deformed area."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        grow = 1.0 + self.wobble
        half_x = grow * np.hypot(self.semi_major * cos, self.semi_minor * sin) + 1
        half_y = grow * np.hypot(self.semi_major * sin, self.semi_minor * cos) + 1
        return (self.cx - half_x, self.cy - half_y, self.cx + half_x, self.cy + half_y)

    def outline(self) -> tuple[np.ndarray, np.ndarray]:
        phi = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        grow = 1.0 + self.wobble
        u, v = grow * self.semi_major * np.cos(phi), grow * self.semi_minor * np.sin(phi)
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return self.cx + u * cos - v * sin, self.cy + u * sin + v * cos

    def draw(self, canvas: Canvas) -> Box | None:
        """Press the dent into the canvas; return the box of the visible change.

        A dent too subtle to see is left out (the canvas is unchanged) and gives None.
        """
        window = self.window(canvas.shape)
        gx, gy = self.deformed(canvas.slopes, window)
        dented = shade(canvas.scene, gx, gy, window)
        min_side = DENT_MIN_SIDE * canvas.scene.scale
        box = _visible_box(canvas.radiance[window], dented, window, canvas, min_side)
        if box is not None:
            canvas.radiance[window] = dented
        return box

    def deformed(self, slopes, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The panel's slopes over ``window`` with the dent pressed in."""
        xs, ys = pixel_grid(slopes[0].shape[1], slopes[0].shape[0], window)
        cos, sin = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        dx, dy = xs - np.float32(self.cx), ys - np.float32(self.cy)
        u = (dx * cos + dy * sin) / np.float32(self.semi_major)
        v = (-dx * sin + dy * cos) / np.float32(self.semi_minor)
        radius = 1.0 + self.wobble * np.sin(self.lobes * np.arctan2(v, u) + self.wobble_phase)
        height = _bowl((u * u + v * v) / radius**2, self.sharpness) * np.float32(self.depth)
        if self.core:
            core2 = ((u - self.core_at[0]) ** 2 + (v - self.core_at[1]) ** 2) / 0.2
            height += _bowl(core2, 2.5) * np.float32(self.core * self.depth)
        slope_y, slope_x = np.gradient(-height)
        return slopes[0][window] + slope_x, slopes[1][window] + slope_y

    def window(self, shape: tuple[int, int]) -> Window:
        """The pixels the dent can change in an image of ``shape`` (height, width)."""
        return _window(self.extent(), shape)


@dataclass(frozen=True)
class Stroke:
    """One scratch line: a polyline with a width and a strength (coverage) at every point."""

    points: np.ndarray  # (n, 2) x, y
    widths: np.ndarray  # (n,)
    strengths: np.ndarray  # (n,)


@dataclass(frozen=True)
class ScratchCluster:
    """One or a few near-parallel strokes of one colour: one damage, one box."""

    strokes: tuple[Stroke, ...]
    colour: np.ndarray  # linear reflectance of the exposed layer (primer, bare metal, grime)
    contrast: float  # at least this much brighter (> 1) or darker (< 1) than its surroundings

    label = SCRATCH

    def extent(self) -> tuple[float, float, float, float]:
        points = np.concatenate([stroke.points for stroke in self.strokes])
        margin = max(float(stroke.widths.max()) for stroke in self.strokes) / 2 + 1
        low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
        return (low[0], low[1], high[0], high[1])

    def outline(self) -> tuple[np.ndarray, np.ndarray]:
        points = np.concatenate([stroke.points for stroke in self.strokes])
        return points[:, 0], points[:, 1]

    def coverage(self, shape: tuple[int, int]) -> tuple[np.ndarray, Window]:
        """How much of each pixel the strokes cover (0..1), over the cluster's window."""
        window = _window(self.extent(), shape)
        alpha = np.zeros(
            (window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=np.float32
        )
        origin = np.array([window[1].start, window[0].start], dtype=np.float32)
        for stroke in self.strokes:
            _draw_stroke(alpha, stroke, origin)
        return alpha, window

    def draw(self, canvas: Canvas) -> Box | None:
        """Paint the scratches onto the canvas; return the box of the visible change.

        Scratches too faint to see (on burnt-out highlights, say) are left out and give None.
        """
        alpha, window = self.coverage(canvas.shape)
        scene = canvas.scene
        # The exposed layer is rough: lit like a flat diffuse surface, it reflects no scenery but
        # scatters it, so it stands out from whatever the clear coat around it reflects.
        background = canvas.radiance[window]
        exposed = self.colour * scene.diffuse_light(np.float32(scene.light[2]))
        stand_out = np.maximum if self.contrast > 1 else np.minimum
        exposed = stand_out(exposed, background * np.float32(self.contrast))
        cover = alpha[..., None]
        scratched = background * (1 - cover) + exposed * cover
        box = _visible_box(background, scratched, window, canvas, min_side=0)
        if box is not None:
            canvas.radiance[window] = scratched
        return box


Damage = Dent | ScratchCluster


def sample_damage(rng: np.random.Generator, scene: PanelScene) -> list[Damage]:
    """One to three damages that fit on the paint without touching each other, dents first.

    Dents come first because a scratch is drawn over whatever surface lies under it.
    """
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    placed: list[Damage] = []
    for _ in range(count):
        make = _sample_scratch_cluster if rng.random() < _SCRATCH_SHARE else _sample_dent
        for _ in range(_PLACEMENT_TRIES):
            candidate = make(rng, scene)
            if _fits(candidate, scene, placed):
                placed.append(candidate)
                break
    return sorted(placed, key=lambda damage: damage.label != DENT)


def _fits(candidate: Damage, scene: PanelScene, placed: list[Damage]) -> bool:
    x0, y0, x1, y1 = candidate.extent()
    if x0 < 1 or y0 < 1 or x1 > scene.width - 2 or y1 > scene.height - 2:
        return False
    if not scene.allows(*candidate.outline()):
        return False
    for other in placed:
        ox0, oy0, ox1, oy1 = other.extent()
        apart_x = x1 + _SPACING < ox0 or ox1 + _SPACING < x0
        apart_y = y1 + _SPACING < oy0 or oy1 + _SPACING < y0
        if not (apart_x or apart_y):
            return False
    return True


def _sample_dent(rng: np.random.Generator, scene: PanelScene) -> Dent:
    semi_major = rng.uniform(16.0, 58.0) * scene.scale
    semi_minor = semi_major * rng.uniform(0.45, 1.0)
    sharpness = float(rng.uniform(2.0, 3.5))
    # Steepest slope of (1 - r^2)^p is at r^2 = 1 / (2p - 1); scale the depth to a target slope.
    r = 1.0 / np.sqrt(2 * sharpness - 1)
    peak = 2 * sharpness * r * (1 - r * r) ** (sharpness - 1)
    steepest = rng.uniform(0.08, 0.2)
    core_distance, core_direction = rng.uniform(0, 0.4), rng.uniform(0, 2 * np.pi)
    return Dent(
        cx=float(rng.uniform(0, scene.width)),
        cy=float(rng.uniform(0, scene.height)),
        semi_major=float(semi_major),
        semi_minor=float(semi_minor),
        angle=float(rng.uniform(0, np.pi)),
        depth=float(steepest * semi_minor / peak),
        sharpness=sharpness,
        wobble=float(rng.uniform(0.0, 0.1)),
        lobes=int(rng.integers(2, 5)),
        wobble_phase=float(rng.uniform(0, 2 * np.pi)),
        core=float(rng.uniform(0.1, 0.3)) if rng.random() < 0.5 else 0.0,
        core_at=(
            float(core_distance * np.cos(core_direction)),
            float(core_distance * np.sin(core_direction)),
        ),
    )


def _sample_scratch_cluster(rng: np.random.Generator, scene: PanelScene) -> ScratchCluster:
    scale = scene.scale
    length = rng.uniform(50.0, 230.0) * scale
    angle = rng.uniform(0, np.pi)
    centre = np.array([rng.uniform(0, scene.width), rng.uniform(0, scene.height)])
    strokes = [_sample_stroke(rng, centre, length, angle, scale)]
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.55, 0.25, 0.12, 0.08]))):
        normal = np.array([-np.sin(angle), np.cos(angle)])
        along = np.array([np.cos(angle), np.sin(angle)])
        offset = (
            normal * rng.uniform(3.0, 18.0) * rng.choice([-1, 1]) * scale
            + along * rng.uniform(-0.2, 0.2) * length
        )
        strokes.append(
            _sample_stroke(
                rng,
                centre + offset,
                length * rng.uniform(0.4, 1.0),
                angle + rng.normal(0, 0.08),
                scale,
            )
        )
    return ScratchCluster(tuple(strokes), *_scratch_look(rng, scene))


def _sample_stroke(rng, centre: np.ndarray, length: float, angle: float, scale: float) -> Stroke:
    count = max(int(length / 5), 8)
    s = np.linspace(0.0, 1.0, count)
    along = (s - 0.5) * length
    lateral = length * rng.uniform(-0.05, 0.05) * 4 * s * (1 - s)  # a slight bow
    for _ in range(2):  # and a wobble
        lateral += (
            rng.uniform(0.3, 1.5)
            * scale
            * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * s + rng.uniform(0, 2 * np.pi))
        )
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack(
        [centre[0] + along * cos - lateral * sin, centre[1] + along * sin + lateral * cos], axis=1
    )
    taper = np.clip(np.sin(np.pi * s) * 3.0, 0.35, 1.0)
    widths = rng.uniform(1.3, 3.6) * scale * taper * rng.uniform(0.8, 1.2, count)
    strengths = np.clip(
        0.9 + 0.25 * np.sin(2 * np.pi * rng.uniform(1, 3) * s + rng.uniform(0, 2 * np.pi)),
        0.65,
        1.0,
    )
    return Stroke(
        points.astype(np.float32), widths.astype(np.float32), strengths.astype(np.float32)
    )


def _scratch_look(rng: np.random.Generator, scene: PanelScene) -> tuple[np.ndarray, float]:
    """Lighter (scuffed clear coat, primer) or darker (grime, bare steel) than the paint."""
    paint = np.array(scene.paint.srgb, dtype=np.float32)
    luma = float(paint @ LUMA)
    options = []
    if luma + 0.3 < 0.95:
        options.append((rng.uniform(max(luma + 0.3, 0.6), 0.95), rng.uniform(1.5, 2.2)))
    if luma - 0.3 > 0.1:
        options.append((rng.uniform(0.08, luma - 0.3), rng.uniform(0.3, 0.5)))
    level, contrast = options[int(rng.integers(len(options)))]
    tinted = np.float32(level) * (0.85 + 0.15 * paint / max(float(paint.max()), 1e-3))
    return np.power(np.clip(tinted, 0, 1), np.float32(2.2)), float(contrast)


def _draw_stroke(alpha: np.ndarray, stroke: Stroke, origin: np.ndarray) -> None:
    """Anti-aliased stroke coverage, segment by segment over each segment's own small window."""
    points = stroke.points - origin
    reach = float(stroke.widths.max()) / 2 + 1.5
    height, width = alpha.shape
    for i in range(len(points) - 1):
        p0, p1 = points[i], points[i + 1]
        x0 = max(int(np.floor(min(p0[0], p1[0]) - reach)), 0)
        x1 = min(int(np.ceil(max(p0[0], p1[0]) + reach)) + 1, width)
        y0 = max(int(np.floor(min(p0[1], p1[1]) - reach)), 0)
        y1 = min(int(np.ceil(max(p0[1], p1[1]) + reach)) + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        direction = p1 - p0
        t = ((xs - p0[0]) * direction[0] + (ys - p0[1]) * direction[1]) / max(
            float(direction @ direction), 1e-6
        )
        t = np.clip(t, 0.0, 1.0)
        distance = np.hypot(xs - (p0[0] + t * direction[0]), ys - (p0[1] + t * direction[1]))
        half = (stroke.widths[i] + t * (stroke.widths[i + 1] - stroke.widths[i])) / 2
        strength = stroke.strengths[i] + t * (stroke.strengths[i + 1] - stroke.strengths[i])
        cover = np.clip(half + 0.5 - distance, 0.0, 1.0) * strength
        np.maximum(alpha[y0:y1, x0:x1], cover, out=alpha[y0:y1, x0:x1])


def _visible_box(before, after, window: Window, canvas: Canvas, min_side: float) -> Box | None:
    """Box around the pixels of ``window`` that visibly change; None if the change is too subtle.

    ``before`` and ``after`` are the window's radiance without and with the damage.
    """
    exposure = np.float32(canvas.exposure)
    change = np.abs(to_display(after * exposure) - to_display(before * exposure))
    change = change.max(axis=2)
    if change.max() < MIN_PEAK_CHANGE:
        return None
    box = _mask_box(change > VISIBLE_CHANGE, window, canvas.shape)
    if box is None or min(box[2], box[3]) < min_side:
        return None
    return box


def _bowl(r2: np.ndarray, sharpness: float) -> np.ndarray:
    """(1 - r^2)^sharpness inside the unit circle, 0 outside: smooth at the rim."""
    return np.clip(1.0 - r2, 0.0, None) ** np.float32(sharpness)


def _window(extent, shape) -> Window:
    """The pixel rows and columns covering ``extent``, clipped to an image of ``shape``."""
    x0, y0, x1, y1 = extent
    height, width = shape
    return (
        slice(max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, height)),
        slice(max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, width)),
    )


def _mask_box(mask: np.ndarray, window: Window, shape) -> Box | None:
    """Tight [x, y, w, h] around the mask's pixels, at least MIN_BOX_SIDE, inside the image."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    height, width = shape
    x0, x1 = _at_least(cols[0] + window[1].start, cols[-1] + window[1].start + 1, width)
    y0, y1 = _at_least(rows[0] + window[0].start, rows[-1] + window[0].start + 1, height)
    return (x0, y0, x1 - x0, y1 - y0)


def _at_least(start: int, stop: int, limit: int) -> tuple[int, int]:
    """Widen [start, stop) symmetrically to MIN_BOX_SIDE, staying within [0, limit)."""
    missing = MIN_BOX_SIDE - (stop - start)
    if missing > 0:
        start = max(start - missing // 2, 0)
        stop = min(start + MIN_BOX_SIDE, limit)
        start = max(stop - MIN_BOX_SIDE, 0)
    return int(start), int(stop)
