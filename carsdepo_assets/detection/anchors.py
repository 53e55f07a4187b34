"""Anchors that fit the damage: learned from the training boxes, and how well a set covers them.

Faster R-CNN's region proposal network learns only from anchors that overlap a ground-truth box
well (IoU >= ``rpn_fg_iou_thresh``, Faster R-CNN's 0.7 or this project's 0.5); a box no
anchor reaches gets one weak positive at best. One square-ish anchor size per level, twice the
level's stride, misses most small, thin scratches. So the anchors are chosen from the data when
training starts (``learn_anchors``):

- aspect ratios (height / width, shared by every level, as both backends' RPN heads need the
  same anchor count per level): k-means on the boxes' log aspect ratios;
- sizes: ``anchor_sizes_per_level`` per level. Each level takes sizes from its own band (at
  least twice its stride, as the default 16/32/64/128 on strides 8/16/32/64; the stride-8
  level also everything smaller), and the sizes are picked greedily for the largest coverage:
  boxes reaching IoU 0.5 plus boxes reaching the RPN's positive threshold, every class weighing
  the same, each level's anchors on that level's stride grid. (K-means with an IoU distance on
  the box shapes, clusters handed to the levels in order of size, was tried first: on lensor's
  training boxes at 2x zoom it covered 64 % of the test scratches and 76 % of the test dents at
  IoU 0.5, against 88 % / 97 % for a hand-picked set, because it put its smallest clusters where
  a stride-8 grid cannot place them: a 6 px anchor can sit 4 px off a box's centre.)

``anchor_coverage`` says, per class, which share of boxes has an anchor at IoU >= 0.5 and at
IoU >= the RPN's positive threshold, with the anchors laid out as the model lays them out
(centred on the stride grid of each level), so a box between grid points is not credited with
an overlap no anchor has. The learned set is kept only when it covers at least as many boxes
as the configured one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from carsdepo_assets.detection.config import DetectorConfig

# Both backends' FPN levels (torchvision: c3, c4, c5, pool; detectron2: p3-p6).
ANCHOR_STRIDES: tuple[int, ...] = (8, 16, 32, 64)
COVERAGE_IOU = 0.5
KMEANS_ITERATIONS = 100


def anchor_shapes(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """(width, height) of each anchor of one level, as both backends build them: area
    ``size**2``, height / width = ratio."""
    shapes = [(size / np.sqrt(ratio), size * np.sqrt(ratio))
              for ratio in aspect_ratios for size in sizes]
    return np.array(shapes, dtype=np.float64).reshape(-1, 2)


def best_anchor_iou(
    boxes: np.ndarray,
    anchor_sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
    strides: Sequence[int] = ANCHOR_STRIDES,
) -> np.ndarray:
    """For each (x1, y1, x2, y2) box, the IoU of the best anchor of any level, anchors centred
    on that level's grid points (multiples of its stride) nearest the box's centre."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    best = np.zeros(len(boxes))
    if not len(boxes):
        return best
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for sizes, stride in zip(anchor_sizes, strides, strict=True):
        shapes = anchor_shapes(sizes, aspect_ratios)  # (A, 2)
        low = np.floor(centres / stride) * stride  # the grid point below-left of the centre
        for dx in (0, stride):
            for dy in (0, stride):
                grid = low + (dx, dy)  # (N, 2)
                anchors = np.concatenate([grid[:, None, :] - shapes[None] / 2,
                                          grid[:, None, :] + shapes[None] / 2], axis=2)
                best = np.maximum(best, _iou(boxes[:, None, :], anchors).max(axis=1))
    return best


def anchor_coverage(
    boxes_by_class: Mapping[str, np.ndarray],
    anchor_sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
    positive_iou: float,
    strides: Sequence[int] = ANCHOR_STRIDES,
) -> dict[str, dict[str, float | int | None]]:
    """Per class: the boxes counted, and the share whose best anchor reaches IoU 0.5
    (``iou50``) and the RPN's positive threshold (``positive``); None for a class without
    boxes. Boxes are (x1, y1, x2, y2) at the scale the model sees them."""
    coverage = {}
    for name, boxes in boxes_by_class.items():
        iou = best_anchor_iou(boxes, anchor_sizes, aspect_ratios, strides)
        coverage[name] = {
            "boxes": int(len(iou)),
            "iou50": float((iou >= COVERAGE_IOU).mean()) if len(iou) else None,
            "positive": float((iou >= positive_iou).mean()) if len(iou) else None,
        }
    return coverage


def learn_anchors(
    boxes_by_class: Mapping[str, np.ndarray],
    sizes_per_level: int,
    ratio_count: int,
    positive_iou: float,
    strides: Sequence[int] = ANCHOR_STRIDES,
) -> tuple[tuple[tuple[int, ...], ...], tuple[float, ...]]:
    """Anchor sizes per level and shared aspect ratios for (x1, y1, x2, y2) boxes at the
    scale the model sees them; see the module's docstring."""
    boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4)
                            for b in boxes_by_class.values()])
    if len(boxes) < ratio_count:
        raise ValueError(f"{len(boxes)} boxes are too few to learn {ratio_count} aspect ratios")
    shapes = boxes[:, 2:] - boxes[:, :2]
    ratios = tuple(float(round(np.exp(value), 3)) for value in
                   np.sort(_kmeans_1d(np.log(shapes[:, 1] / shapes[:, 0]), ratio_count)))
    # every box weighs 1 / (boxes of its class): rare classes count as much as common ones
    weights = np.concatenate([np.full(len(b), 1.0 / max(1, len(b)))
                              for b in boxes_by_class.values()])
    candidates = np.unique(np.round(np.geomspace(4, max(8.0, shapes.max() * 1.5), 64)))
    level_of = np.array([level_for_size(size, strides) for size in candidates])
    # best IoU of each box with each candidate size on its level: (candidates, boxes)
    table = np.stack([best_anchor_iou(boxes, [(size,)], ratios, (strides[level],))
                      for size, level in zip(candidates, level_of, strict=True)])
    return _greedy_sizes(table, candidates, level_of, len(strides), weights, sizes_per_level,
                         positive_iou), ratios


def level_for_size(size: float, strides: Sequence[int] = ANCHOR_STRIDES) -> int:
    """The FPN level an anchor of ``size`` belongs to: the coarsest whose stride is at most
    half the size (as the default sizes 16/32/64/128 on strides 8/16/32/64), the finest for
    anything smaller."""
    fitting = [level for level, stride in enumerate(strides) if 2 * stride <= size]
    return fitting[-1] if fitting else 0


def _greedy_sizes(table: np.ndarray, candidates: np.ndarray, level_of: np.ndarray,
                  levels: int, weights: np.ndarray, sizes_per_level: int,
                  positive_iou: float) -> tuple[tuple[int, ...], ...]:
    """Pick ``sizes_per_level`` sizes for each level from the candidates of that level, one at
    a time, always the one that adds most weighted boxes reaching IoU 0.5 plus boxes reaching
    ``positive_iou`` (maximum coverage, greedily). A level with too few candidates of its own
    (the data has no boxes that large) gets the default sizes of its band, twice its stride
    and up."""
    chosen: list[list[float]] = [[] for _ in range(levels)]
    best = np.zeros(table.shape[1])

    def score(iou: np.ndarray) -> np.ndarray:
        reached = (iou >= COVERAGE_IOU).astype(float) + (iou >= positive_iou)
        return (reached * weights).sum(axis=-1) + 1e-3 * (iou * weights).sum(axis=-1)

    gains = score(np.maximum(best, table))
    taken = np.zeros(len(candidates), dtype=bool)
    for _ in range(levels * sizes_per_level):
        full = np.array([len(chosen[level]) >= sizes_per_level for level in level_of])
        allowed = ~taken & ~full
        if not allowed.any():
            break
        pick = int(np.argmax(np.where(allowed, gains, -np.inf)))
        taken[pick] = True
        chosen[level_of[pick]].append(float(candidates[pick]))
        best = np.maximum(best, table[pick])
        gains = score(np.maximum(best, table))
    for level, sizes in enumerate(chosen):
        while len(sizes) < sizes_per_level:
            sizes.append(float(2 ** (len(sizes) + 1) * ANCHOR_STRIDES[level]))
    return tuple(tuple(int(size) for size in sorted(sizes)) for sizes in chosen)


def _kmeans_1d(values: np.ndarray, k: int) -> np.ndarray:
    """Plain k-means on numbers, started from their quantiles."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(KMEANS_ITERATIONS):
        assignment = np.abs(values[:, None] - centres[None]).argmin(axis=1)
        updated = np.array([values[assignment == j].mean() if (assignment == j).any()
                            else centres[j] for j in range(k)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return centres


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcastable (..., 4) box arrays."""
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def coverage_for(config: DetectorConfig,
                 boxes_by_class: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """``anchor_coverage`` of ``config``'s anchors at its RPN positive threshold."""
    return anchor_coverage(boxes_by_class, config.anchor_sizes, config.aspect_ratios,
                           config.rpn_fg_iou_thresh)


def with_learned_anchors(config: DetectorConfig,
                         boxes_by_class: Mapping[str, np.ndarray]) -> DetectorConfig:
    """``config`` with anchors learned from the boxes when they cover at least as much as its
    own (``mean_coverage``); else, or with fewer boxes than aspect ratios to learn, ``config``
    unchanged."""
    if sum(len(boxes) for boxes in boxes_by_class.values()) < config.anchor_ratio_count:
        return config
    sizes, ratios = learn_anchors(boxes_by_class, config.anchor_sizes_per_level,
                                  config.anchor_ratio_count, config.rpn_fg_iou_thresh)
    learned = config.replace(anchor_sizes=sizes, aspect_ratios=ratios)
    if mean_coverage(coverage_for(learned, boxes_by_class)) >= \
            mean_coverage(coverage_for(config, boxes_by_class)):
        return learned
    return config


def mean_coverage(coverage: Mapping[str, Mapping]) -> tuple[float, float]:
    """The class mean of the shares reaching IoU 0.5 and the positive threshold (classes
    without boxes left out): what learning maximises, every class weighing the same."""
    kept = [c for c in coverage.values() if c["iou50"] is not None]
    if not kept:
        return (0.0, 0.0)
    return (float(np.mean([c["iou50"] for c in kept])),
            float(np.mean([c["positive"] for c in kept])))
