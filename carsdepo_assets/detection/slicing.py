"""Sliced prediction at native resolution: the tiles a photo is read in, and how the
detections of the tiles and of the whole-image pass become one list.

Tiles are ``config.tile_side`` squares of the photo at its working scale (``data.Crop``,
read from the full-resolution photo in one resampling step), overlapping by
``config.tile_overlap``; the last tile of a row or column is moved back to end at the edge, so
every tile is whole. A tile's detection that touches one of its inner borders (a border that is
not the photo's) is a piece of something cut by the tile and is dropped: the neighbouring tile
sees it whole when it fits in the overlap, and the whole-image pass sees what is larger. What
remains is merged per class by non-maximum suppression at ``config.merge_iou`` (torchvision's
``batched_nms``): the best-scoring box of each object stays as it was found.

Boxes are never grown into the union of their overlapping neighbours (SAHI's greedy
non-maximum merging): with the COCO protocol's score floor of 0.001 a photo has hundreds of weak
boxes, and a union swallows every small scratch inside a large weak box. ``sahi`` (MIT) itself
was not taken: it pulls in OpenCV, Shapely, ``fire``, ``requests`` and more, and wants its own
model wrappers around the detector; ``ensemble-boxes`` (MIT) brings ``numba`` and ``pandas``
and has not been released since 2022.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import Crop, working_scale
from carsdepo_assets.detection.types import Detection

BORDER_PX = 2.0  # a box this close to a tile's inner border (in tile pixels) touches it


def tiles(width: int, height: int, config: DetectorConfig) -> list[Crop]:
    """The tiles of a ``width`` x ``height`` photo, row by row."""
    scale = working_scale(width, height, config.work_side)
    scaled = (int(width * scale), int(height * scale))
    tile = config.tile_side
    columns, rows = (_starts(side, tile, config.tile_overlap) for side in scaled)
    size = (min(tile, scaled[0]), min(tile, scaled[1]))
    return [Crop(scale, (float(x), float(y)), size) for y in rows for x in columns]


def _starts(side: int, tile: int, overlap: float) -> list[int]:
    if side <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, side - tile, step))
    return [*starts, side - tile]


def cut_by_tile(box: Sequence[float], crop: Crop, photo_size: tuple[int, int]) -> bool:
    """Does ``box`` (tile pixels) touch a border of ``crop`` that is not the photo's own?"""
    x, y = crop.origin
    width, height = crop.size
    right_end, bottom_end = (int(side * crop.scale) for side in photo_size)
    x1, y1, x2, y2 = box
    return ((x > 0 and x1 <= BORDER_PX) or (y > 0 and y1 <= BORDER_PX)
            or (x + width < right_end and x2 >= width - BORDER_PX)
            or (y + height < bottom_end and y2 >= height - BORDER_PX))


def merge_detections(detections: Sequence[Detection], iou: float) -> list[Detection]:
    """One detection per object and class (see the module's docstring), best first."""
    if not detections:
        return []
    labels = sorted({d.label for d in detections})
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([d.score for d in detections], dtype=torch.float32)
    classes = torch.tensor([labels.index(d.label) for d in detections])
    kept = batched_nms(boxes, scores, classes, iou)  # best score first
    return [detections[int(index)] for index in kept]
