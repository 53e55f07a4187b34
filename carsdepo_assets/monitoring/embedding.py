"""Content features: backbone embeddings projected onto a few principal components.

A backbone embedding has hundreds of dimensions, too many to test one by one with a useful
Bonferroni bound and mostly redundant. A PCA fitted on the reference embeddings keeps the
directions in which the reference photos actually vary; each component, scaled to unit spread
on the reference, becomes one profiled feature (``content_00``, ``content_01``...) and gets its
own KS test. The projection is saved beside the reference profile, with the backbone it belongs
to: a batch must be embedded by the same backbone and projected by the same PCA to be compared.

The reference photos are split in two (:func:`fit_reference_content`): the PCA is fitted on
one half and the reference's content features are the projections of the other half. The
directions a PCA picks maximise the spread of the very photos it was fitted on, so their
projections are wider than those of any new photo, and a batch from the same distribution
would look drifted (with 200 reference photos of 472 dimensions the excess is large enough to
trigger). Projections of photos the PCA never saw are what a new batch is compared with.

Numpy only: the embeddings come from ``detection.embeddings`` through the assets.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carsdepo_assets.fileio import atomic_write_bytes

CONTENT_PREFIX = "content_"
DEFAULT_COMPONENTS = 16
FORMAT = 1
_MIN_SPREAD = 1e-8


def content_feature_names(count: int) -> tuple[str, ...]:
    return tuple(f"{CONTENT_PREFIX}{index:02d}" for index in range(count))


def is_content_feature(name: str) -> bool:
    return name.startswith(CONTENT_PREFIX)


@dataclass(frozen=True)
class Projection:
    """PCA of reference embeddings: ``mean`` (d,), ``components`` (k, d) with unit rows,
    ``scale`` (k,) the reference spread along each; ``source`` names the backbone."""

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    explained_variance: float
    source: dict = field(default_factory=dict)

    @property
    def dimensions(self) -> int:
        return int(self.mean.shape[0])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return content_feature_names(self.components.shape[0])

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Component values (n, k) of embeddings (n, d), unit spread on the reference."""
        embeddings = _checked(embeddings, "embeddings")
        if embeddings.shape[1] != self.dimensions:
            raise ValueError(f"embeddings have {embeddings.shape[1]} dimensions, the projection "
                             f"({self.source or 'unnamed'}) was fitted on {self.dimensions}")
        return (embeddings - self.mean) @ self.components.T / self.scale

    def features(self, embedding: np.ndarray) -> dict[str, float]:
        """The content features of one image's embedding, keyed by :attr:`feature_names`."""
        values = self.project(np.asarray(embedding, dtype=np.float64).reshape(1, -1))[0]
        return dict(zip(self.feature_names, map(float, values), strict=True))

    def save(self, path: Path) -> None:
        """Store as ``.npz`` (arrays, and the source as JSON), atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, components=self.components, scale=self.scale,
                 explained_variance=np.float64(self.explained_variance),
                 meta=np.array(json.dumps({"format": FORMAT, "source": self.source})))
        atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Projection:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no content projection at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return cls(data["mean"], data["components"], data["scale"],
                           float(data["explained_variance"]), meta.get("source", {}))
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a readable content projection: {error}") from error


def fit_projection(embeddings: np.ndarray, components: int = DEFAULT_COMPONENTS,
                   source: dict | None = None) -> Projection:
    """PCA (by SVD) of reference embeddings (n, d), keeping at most ``components`` components
    (fewer when the reference has fewer images or dimensions than that)."""
    embeddings = _checked(embeddings, "reference embeddings")
    rows = embeddings.shape[0]
    if rows < 3:
        raise ValueError(f"a content projection needs at least 3 reference images to fit on, "
                         f"got {rows}")
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}")
    mean = embeddings.mean(axis=0)
    _, singular, vectors = np.linalg.svd(embeddings - mean, full_matrices=False)
    keep = min(components, rows - 1, embeddings.shape[1])
    spread = singular[:keep] / np.sqrt(rows - 1)
    keep = int(np.count_nonzero(spread > _MIN_SPREAD)) or 1
    total = float((singular ** 2).sum())
    explained = float((singular[:keep] ** 2).sum() / total) if total > 0 else 0.0
    return Projection(mean, vectors[:keep], np.maximum(spread[:keep], _MIN_SPREAD), explained,
                      dict(source or {}))


def fit_reference_content(
    embeddings: np.ndarray, components: int = DEFAULT_COMPONENTS, source: dict | None = None
) -> tuple[Projection, list[dict[str, float]]]:
    """The projection fitted on every other reference image (0, 2, 4...), and per image its
    content features: the projection for the held-out images (1, 3, 5...), NaN for the fitting
    ones (whylogs counts NaN apart, so the reference distribution is the held-out half's)."""
    embeddings = _checked(embeddings, "reference embeddings")
    projection = fit_projection(embeddings[::2], components, source)
    unseen = dict.fromkeys(projection.feature_names, math.nan)
    rows = [projection.features(vector) if index % 2 else dict(unseen)
            for index, vector in enumerate(embeddings)]
    return projection, rows


def _checked(values: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (images x dimensions), got shape "
                         f"{array.shape}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: row(s) {np.flatnonzero(bad)[:5].tolist()} hold NaN or "
                         "infinite values")
    return array
