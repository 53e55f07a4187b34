"""Sliced prediction at native resolution: the tiles a photo is read in, and how the
detections of the tiles and of the whole-image pass become one list.

Tiles are ``config.crop_size`` squares of the photo at its working scale (``data.Crop``,
read from the full-resolution photo in one resampling step), overlapping by
``config.tile_overlap``; the last tile of a row or column is moved back to end at the edge, so
every tile is whole. Detections of one class are merged greedily, best score first: a detection
whose intersection over the smaller box (IoS) with a kept one reaches ``config.merge_iou`` is
folded into it (the kept box grows to cover both), so a box cut in two by a tile border, found
whole in the neighbouring tile, comes out once (SAHI's greedy non-maximum merging).

Not taken from a library: ``sahi`` (MIT) does exactly this, but pulls in OpenCV, Shapely,
``fire``, ``requests`` and more, and wants its own model wrappers around the detector; the
slicing and the merge are about sixty lines here. ``ensemble-boxes`` (MIT) brings ``numba`` and
``pandas`` and has not been released since 2022.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import Crop, working_scale
from carsdepo_assets.detection.types import Detection


def tiles(width: int, height: int, config: DetectorConfig) -> list[Crop]:
    """The tiles of a ``width`` x ``height`` photo, row by row."""
    scale = working_scale(width, height, config.work_side)
    scaled = (int(width * scale), int(height * scale))
    columns, rows = (_starts(side, config.crop_size, config.tile_overlap) for side in scaled)
    size = (min(config.crop_size, scaled[0]), min(config.crop_size, scaled[1]))
    return [Crop(scale, (float(x), float(y)), size) for y in rows for x in columns]


def _starts(side: int, tile: int, overlap: float) -> list[int]:
    if side <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, side - tile, step))
    return [*starts, side - tile]


def merge_detections(detections: Sequence[Detection], match_ios: float) -> list[Detection]:
    """One detection per object and class (see the module's docstring), best first."""
    merged: list[Detection] = []
    for label in dict.fromkeys(d.label for d in detections):
        found = sorted((d for d in detections if d.label == label), key=lambda d: -d.score)
        boxes = np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4)
        ios = _intersection_over_smaller(boxes)
        taken = np.zeros(len(found), dtype=bool)
        for index, detection in enumerate(found):
            if taken[index]:
                continue
            group = np.flatnonzero(~taken & (ios[index] >= match_ios))
            group = group[group >= index]
            taken[group] = True
            members = boxes[np.append(group, index)]
            box = (*members[:, :2].min(axis=0), *members[:, 2:].max(axis=0))
            merged.append(Detection(label, detection.score, tuple(float(v) for v in box)))
    return sorted(merged, key=lambda d: -d.score)


def _intersection_over_smaller(boxes: np.ndarray) -> np.ndarray:
    low = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    smaller = np.minimum(areas[:, None], areas[None, :])
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1), 0.0)
