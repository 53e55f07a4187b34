"""Painted car-body panels: curved, clear-coated metal that reflects its surroundings.

A panel is rendered from its surface slopes. The slope at a pixel sets the surface normal; the
normal sets the diffuse shading and which part of the environment the clear coat reflects.
Anything that deforms the surface (a crease, a rolled panel edge, a dent) therefore bends the
reflection bands the way it does on a real car.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Paint:
    """A car paint; ``share`` is its rough share of cars on the road (sampling weight)."""

    name: str
    srgb: tuple[float, float, float]
    metallic: bool
    share: float

    @property
    def albedo(self) -> np.ndarray:
        """The paint's linear reflectance per channel."""
        return np.power(np.array(self.srgb, dtype=np.float32), np.float32(2.2))


PAINTS: tuple[Paint, ...] = (
    Paint("white", (0.93, 0.93, 0.92), False, 0.20),
    Paint("pearl white", (0.89, 0.88, 0.84), True, 0.05),
    Paint("black", (0.05, 0.05, 0.06), False, 0.12),
    Paint("black metallic", (0.09, 0.09, 0.10), True, 0.07),
    Paint("silver", (0.74, 0.75, 0.77), True, 0.11),
    Paint("grey", (0.42, 0.43, 0.45), True, 0.10),
    Paint("graphite", (0.24, 0.25, 0.27), True, 0.05),
    Paint("red", (0.66, 0.07, 0.08), False, 0.07),
    Paint("dark red", (0.42, 0.05, 0.08), True, 0.03),
    Paint("blue", (0.10, 0.24, 0.56), True, 0.07),
    Paint("navy", (0.07, 0.10, 0.26), True, 0.04),
    Paint("green", (0.10, 0.30, 0.20), True, 0.03),
    Paint("beige", (0.74, 0.68, 0.57), True, 0.03),
    Paint("orange", (0.85, 0.36, 0.06), False, 0.01),
    Paint("yellow", (0.92, 0.76, 0.12), False, 0.01),
)
_PAINT_SHARES = np.array([paint.share for paint in PAINTS]) / sum(p.share for p in PAINTS)


@dataclass(frozen=True)
class Line:
    """A straight line through the image, as a point on it and its unit normal."""

    x: float
    y: float
    nx: float
    ny: float

    @classmethod
    def through(cls, x: float, y: float, angle: float) -> Line:
        """The line through (x, y) running at ``angle`` radians from the x axis."""
        return cls(x, y, -float(np.sin(angle)), float(np.cos(angle)))

    def distance(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Signed distance in pixels (positive on the side the normal points to)."""
        return (xs - self.x) * self.nx + (ys - self.y) * self.ny


_TABLE_SIZE = 16385  # an odd size puts t = 0 on the grid


@dataclass(frozen=True)
class Environment:
    """What the clear coat reflects, as a function of one reflection coordinate ``t``.

    Bright sky on one side of a horizon, darker ground on the other, plus soft bands: the bright
    windows, lamps and buildings (or dark trees) that show up as stripes on a car's side.
    """

    direction: tuple[float, float]
    horizon: float
    softness: float
    sky: tuple[float, float]
    ground: tuple[float, float]
    bands: tuple[tuple[float, float, float], ...]  # (centre, width, radiance); may be negative

    def radiance(self, t: np.ndarray) -> np.ndarray:
        """Reflected radiance at each reflection coordinate of ``t``, through a fine table."""
        index = (t + np.float32(1.0)) * np.float32((_TABLE_SIZE - 1) / 2) + np.float32(0.5)
        return self._table[index.astype(np.int32)]

    @functools.cached_property
    def _table(self) -> np.ndarray:
        # The reflection coordinate lies in [-1, 1]: a fixed grid makes shading purely local.
        return self.exact(np.linspace(-1.0, 1.0, _TABLE_SIZE, dtype=np.float32))

    def exact(self, t: np.ndarray) -> np.ndarray:
        above = _sigmoid((self.horizon - t) / self.softness)
        offset = t - self.horizon
        sky = self.sky[0] + self.sky[1] * np.clip(-offset, 0.0, None)
        ground = self.ground[0] + self.ground[1] * np.clip(offset, 0.0, None)
        result = ground + (sky - ground) * above
        for centre, width, value in self.bands:
            result += value * np.exp(-0.5 * ((t - centre) / width) ** 2)
        return np.clip(result, 0.0, None)


@dataclass(frozen=True)
class Geometry:
    """The panel's large-scale shape, as slopes: curved in both directions, maybe creased."""

    centre: tuple[float, float]
    radius: tuple[float, float]  # curvature radii in pixels (signed) along x and y
    bow: float  # bends the reflection bands across the panel
    cubic: float
    crease: Line | None
    crease_jump: float
    crease_width: float

    def slopes(self, xs: np.ndarray, ys: np.ndarray, size: tuple[int, int]):
        width, height = size
        dx = xs - self.centre[0]
        dy = ys - self.centre[1]
        gx = dx / self.radius[0]
        gy = dy / self.radius[1] + self.cubic * (dy / height) ** 3 + self.bow * (dx / width) ** 2
        if self.crease is not None:
            step = _sigmoid(self.crease.distance(xs, ys) / self.crease_width)
            gx = gx + self.crease_jump * self.crease.nx * step
            gy = gy + self.crease_jump * self.crease.ny * step
        return gx, gy


@dataclass(frozen=True)
class PanelGap:
    """The gap between two panels (door and fender, say), optionally with black trim beyond."""

    line: Line
    half_width: float
    edge_width: float
    trim: bool  # the side the line's normal points to is black plastic trim, not paint

    @property
    def keep_out(self) -> float:
        """How far damage stays from the gap line (the gap and its rolled edges)."""
        return self.half_width + self.edge_width + 6.0


@dataclass(frozen=True)
class PanelScene:
    """Everything random about one panel photo except damage and camera."""

    width: int
    height: int
    paint: Paint
    light: tuple[float, float, float]  # unit vector towards the main light
    illuminance: float  # how much light falls on the panel
    ambient: float  # share of it that comes from all around rather than the main light
    clearcoat: float
    geometry: Geometry
    environment: Environment
    gap: PanelGap | None
    peel: tuple[np.ndarray, np.ndarray]  # orange-peel slope ripples
    flake: np.ndarray | None  # metallic flake sparkle, multiplies the albedo

    @property
    def scale(self) -> float:
        """Damage sizes are specified at 480 px image height (the short side of 640x480)."""
        return min(self.width, self.height) / 480.0

    def diffuse_light(self, lambert):
        """Light reaching a surface whose cosine to the main light is ``lambert``."""
        ambient = np.float32(self.ambient)
        return np.float32(self.illuminance) * (ambient + (1 - ambient) * lambert)

    def allows(self, xs: np.ndarray, ys: np.ndarray) -> bool:
        """True when every point is on paint, clear of the panel gap and of the trim."""
        if self.gap is None:
            return True
        distance = self.gap.line.distance(xs, ys)
        if np.any(np.abs(distance) < self.gap.keep_out):
            return False
        return not (self.gap.trim and np.any(distance > 0))


def sample_scene(rng: np.random.Generator, width: int, height: int) -> PanelScene:
    """Draw a panel: paint, shape, surroundings, light and an optional panel gap."""
    paint = PAINTS[int(rng.choice(len(PAINTS), p=_PAINT_SHARES))]
    scale = min(width, height) / 480.0
    geometry = _sample_geometry(rng, width, height, scale)
    azimuth = rng.uniform(-np.pi, np.pi)
    elevation = rng.uniform(0.4, 1.1)
    light = (
        float(np.cos(elevation) * np.cos(azimuth)),
        float(np.cos(elevation) * np.sin(azimuth)),
        float(np.sin(elevation)),
    )
    environment = _sample_environment(rng, geometry, width, height)
    gap = _sample_gap(rng, width, height, scale) if rng.random() < 0.45 else None
    cell = rng.uniform(20.0, 40.0) * scale
    peel = (_smooth_noise(rng, width, height, cell), _smooth_noise(rng, width, height, cell))
    amplitude = np.float32(rng.uniform(0.0003, 0.0012))
    flake = None
    if paint.metallic:
        flake = np.float32(0.12) * rng.random((height, width), dtype=np.float32) + np.float32(0.94)
    return PanelScene(
        width=width,
        height=height,
        paint=paint,
        light=light,
        illuminance=float(rng.uniform(0.6, 0.85)),
        ambient=float(rng.uniform(0.15, 0.35)),
        clearcoat=float(rng.uniform(0.035, 0.06)),
        geometry=geometry,
        environment=environment,
        gap=gap,
        peel=(peel[0] * amplitude, peel[1] * amplitude),
        flake=flake,
    )


def surface_slopes(scene: PanelScene) -> tuple[np.ndarray, np.ndarray]:
    """Slopes (d height / dx, d height / dy) of the undamaged panel at every pixel, (H, W) each."""
    xs, ys = pixel_grid(scene.width, scene.height)
    gx, gy = scene.geometry.slopes(xs, ys, (scene.width, scene.height))
    gx = gx + scene.peel[0]
    gy = gy + scene.peel[1]
    if scene.gap is not None:
        gap = scene.gap
        distance = gap.line.distance(xs, ys)
        # The sheet metal rolls over into the gap: a rounded edge that catches the light.
        depth = np.clip((gap.half_width + gap.edge_width - np.abs(distance)) / gap.edge_width, 0, 1)
        roll = np.float32(1.2) * depth**2 * np.sign(distance)
        gx = gx + roll * gap.line.nx
        gy = gy + roll * gap.line.ny
    return gx.astype(np.float32), gy.astype(np.float32)


Window = tuple[slice, slice]  # rows, columns of a rectangle of pixels
FULL: Window = (slice(None), slice(None))


def shade(scene: PanelScene, gx: np.ndarray, gy: np.ndarray, window: Window = FULL) -> np.ndarray:
    """Linear radiance (h, w, 3) of ``window`` of the panel, whose slopes there are ``gx``, ``gy``.

    Shading is local, so a window renders exactly as the same pixels of the whole image.
    """
    norm2 = 1.0 + gx * gx + gy * gy
    lx, ly, lz = (np.float32(v) for v in scene.light)
    lambert = np.clip((lz - gx * lx - gy * ly) / np.sqrt(norm2), 0.0, None)
    # Orthographic view: the reflected ray's sideways component is -2 g / (1 + |g|^2).
    ax, ay = scene.environment.direction
    t = -2.0 * (ax * gx + ay * gy) / norm2
    reflection = scene.environment.radiance(t) * np.float32(scene.clearcoat)
    diffuse = scene.diffuse_light(lambert)
    if scene.flake is not None:
        diffuse = diffuse * scene.flake[window]
    radiance = diffuse[..., None] * scene.paint.albedo + reflection[..., None]
    if scene.gap is not None:
        radiance = _draw_gap(scene, radiance, diffuse, reflection, window)
    return radiance


def pixel_grid(width: int, height: int, window: Window = FULL) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of ``window`` as a row (1, w) of x and a column (h, 1) of y."""
    xs = np.arange(width, dtype=np.float32)[window[1]][None, :]
    ys = np.arange(height, dtype=np.float32)[window[0]][:, None]
    return xs, ys


def _draw_gap(scene: PanelScene, radiance, diffuse, reflection, window: Window) -> np.ndarray:
    gap = scene.gap
    distance = gap.line.distance(*pixel_grid(scene.width, scene.height, window))
    if gap.trim:
        trim = np.float32(0.03) * diffuse + np.float32(0.15) * reflection
        on_trim = np.clip(distance - gap.half_width + 0.5, 0.0, 1.0)[..., None]
        radiance = radiance * (1 - on_trim) + trim[..., None] * on_trim
    opening = np.clip(gap.half_width + 0.5 - np.abs(distance), 0.0, 1.0)[..., None]
    return radiance * (1.0 - np.float32(0.97) * opening)


def _sample_geometry(rng, width: int, height: int, scale: float) -> Geometry:
    crease = None
    if rng.random() < 0.5:
        crease = Line.through(
            rng.uniform(0, width), rng.uniform(0.1, 0.9) * height, rng.normal(0.0, 0.12)
        )
    return Geometry(
        centre=(rng.uniform(-0.2, 1.2) * width, rng.uniform(-0.3, 1.3) * height),
        radius=(
            float(rng.choice([-1, 1]) * rng.uniform(1500, 6000) * scale),
            float(rng.choice([-1, 1]) * rng.uniform(450, 1400) * scale),
        ),
        bow=float(rng.uniform(-0.25, 0.25)),
        cubic=float(rng.uniform(-0.3, 0.3)),
        crease=crease,
        crease_jump=float(rng.uniform(0.06, 0.18) * rng.choice([-1, 1])),
        crease_width=float(rng.uniform(1.0, 3.0) * scale),
    )


def _sample_environment(rng, geometry: Geometry, width: int, height: int) -> Environment:
    angle = rng.normal(0.0, 0.25) + (np.pi / 2 if rng.random() < 0.15 else 0.0)
    direction = (float(np.sin(angle)), float(np.cos(angle)))
    # Place the horizon and bands where this panel's reflections actually land.
    xs = np.linspace(0, width, 17, dtype=np.float32)[None, :]
    ys = np.linspace(0, height, 13, dtype=np.float32)[:, None]
    gx, gy = geometry.slopes(xs, ys, (width, height))
    t = (-2.0 * (direction[0] * gx + direction[1] * gy) / (1.0 + gx * gx + gy * gy)).ravel()
    low, high = np.quantile(t, [0.02, 0.98])
    span = max(float(high - low), 0.05)
    bands = []
    for _ in range(int(rng.integers(1, 4))):
        bands.append(
            (
                float(rng.uniform(low, high)),
                float(rng.uniform(0.04, 0.14) * span),
                float(rng.uniform(3.0, 12.0)),
            )
        )
    for _ in range(int(rng.integers(0, 3))):
        bands.append(
            (
                float(rng.uniform(low, high)),
                float(rng.uniform(0.04, 0.15) * span),
                float(-rng.uniform(0.5, 2.0)),
            )
        )
    return Environment(
        direction=direction,
        horizon=float(rng.uniform(low + 0.15 * span, high - 0.15 * span)),
        softness=float(rng.uniform(0.03, 0.1) * span),
        sky=(float(rng.uniform(2.0, 5.0)), float(rng.uniform(2.0, 8.0))),
        ground=(float(rng.uniform(0.3, 1.2)), float(rng.uniform(0.5, 3.0))),
        bands=tuple(bands),
    )


def _sample_gap(rng, width: int, height: int, scale: float) -> PanelGap:
    vertical = rng.random() < 0.6
    if vertical:
        position = rng.uniform(0.06, 0.25) * width
        x = position if rng.random() < 0.5 else width - position
        line = Line.through(x, height / 2, np.pi / 2 + rng.normal(0.0, 0.08))
        outward = 1.0 if x > width / 2 else -1.0
        points_outward = np.sign(line.nx) == outward
    else:
        position = rng.uniform(0.06, 0.22) * height
        y = position if rng.random() < 0.5 else height - position
        line = Line.through(width / 2, y, rng.normal(0.0, 0.06))
        outward = 1.0 if y > height / 2 else -1.0
        points_outward = np.sign(line.ny) == outward
    if not points_outward:  # the trim, if any, is on the narrow side near the image border
        line = Line(line.x, line.y, -line.nx, -line.ny)
    return PanelGap(
        line=line,
        half_width=float(rng.uniform(1.5, 3.5) * scale),
        edge_width=float(rng.uniform(3.0, 7.0) * scale),
        trim=bool(rng.random() < 0.4),
    )


def _smooth_noise(rng, width: int, height: int, cell: float) -> np.ndarray:
    """Smooth random field with features about ``cell`` pixels across, unit-ish amplitude."""
    cells_x = max(int(width / cell) + 2, 2)
    cells_y = max(int(height / cell) + 2, 2)
    coarse = rng.standard_normal((cells_y, cells_x), dtype=np.float32)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
