"""Copy-paste augmentation: more damage instances for a detector that has few of them.

Annotated scratches and dents are cut from training photos (the box and a margin around it)
and pasted onto other training samples at places where no box is, with scale, mirror and
colour jitter (Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for
Instance Segmentation", CVPR 2021). Boxes stand in for the masks the paper uses: the patch is
opaque over its box and fades out over the margin, so the source's paint blends into the
target's instead of leaving a hard rectangle edge. The pasted box is the new label.

Classes are drawn uniformly (then an instance of the class), so a rare class (dents) is pasted
as often as a common one. Another instance that lies in a patch's margin or box goes with it
unlabelled: patches are small, so this is rare, and it is the price of not needing masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from carsdepo_assets.detection.data import ImageRecord

# the patch reaches this share of its box's side beyond the box on each side (the blend zone)
MARGIN_SHARE = 0.2
MIN_MARGIN_PX = 2
SCALE_JITTER = (0.75, 1.25)  # size at the target's scale times a factor drawn from this
COLOUR_JITTER = 0.15  # each channel's gain times a factor within 1 +- this
# each channel is scaled to the mean of what the patch covers (the paint around a scratch is
# the most visible seam), but never further than this
GAIN_LIMITS = (0.5, 2.0)
MIN_PASTED_SIDE_PX = 4.0
MAX_PASTED_SHARE = 0.4  # a pasted box's longer side at most this share of the sample's shorter
PLACEMENT_TRIES = 10


@dataclass(frozen=True)
class DamageInstance:
    """One annotated box of a training photo: where to cut it from."""

    path: Path
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the photo's pixels
    label: int


@dataclass(frozen=True)
class Patch:
    """A cut-out instance: RGB pixels (H, W, 3 uint8) and its box inside them."""

    pixels: np.ndarray
    box: tuple[float, float, float, float]
    label: int


class DamageBank:
    """Every box of the training records, cut from its photo the first time it is drawn."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self._by_label: dict[int, list[DamageInstance]] = {}
        for record in records:
            for box, label in zip(record.boxes.tolist(), record.labels.tolist(), strict=True):
                self._by_label.setdefault(int(label), []).append(
                    DamageInstance(record.path, tuple(box), int(label)))
        self._labels = sorted(self._by_label)
        self._patches: dict[tuple[int, int], Patch] = {}

    def __len__(self) -> int:
        return sum(len(instances) for instances in self._by_label.values())

    def draw(self, rng: np.random.Generator) -> Patch | None:
        """A random instance of a random class, or None when the bank is empty."""
        if not self._labels:
            return None
        label = self._labels[int(rng.integers(len(self._labels)))]
        index = int(rng.integers(len(self._by_label[label])))
        key = (label, index)
        if key not in self._patches:
            self._patches[key] = cut_patch(self._by_label[label][index])
        return self._patches[key]


def cut_patch(instance: DamageInstance) -> Patch:
    """The instance's box and its blend margin, at the photo's own resolution."""
    x1, y1, x2, y2 = instance.box
    with Image.open(instance.path) as image:
        width, height = image.size
        margin_x = max(MIN_MARGIN_PX, MARGIN_SHARE * (x2 - x1))
        margin_y = max(MIN_MARGIN_PX, MARGIN_SHARE * (y2 - y1))
        left, top = max(0, int(x1 - margin_x)), max(0, int(y1 - margin_y))
        right = min(width, int(np.ceil(x2 + margin_x)))
        bottom = min(height, int(np.ceil(y2 + margin_y)))
        pixels = np.asarray(image.convert("RGB").crop((left, top, right, bottom)))
    return Patch(pixels, (x1 - left, y1 - top, x2 - left, y2 - top), instance.label)


def paste_damage(
    tensor: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    bank: DamageBank,
    most: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste 0 to ``most`` instances (as many as drawn uniformly) onto ``tensor`` (C, H, W in
    [0, 1]) where they, their blend margin included, overlap no box. ``scale`` is the sample's
    pixels per photo pixel (the instances are sized as if photographed alike). Returns the image
    and the boxes and labels with the pasted ones."""
    count = int(rng.integers(0, most + 1))
    if not count:
        return tensor, boxes, labels
    tensor = tensor.clone()
    taken = boxes.reshape(-1, 4).tolist()
    new_boxes, new_labels = [], []
    for _ in range(count):
        patch = bank.draw(rng)
        if patch is None:
            break
        placed = _place(tensor, patch, scale, taken, rng)
        if placed is not None:
            taken.append(placed)
            new_boxes.append(placed)
            new_labels.append(patch.label)
    if not new_boxes:
        return tensor, boxes, labels
    boxes = torch.cat([boxes.reshape(-1, 4), torch.tensor(new_boxes, dtype=boxes.dtype)])
    labels = torch.cat([labels, torch.tensor(new_labels, dtype=labels.dtype)])
    return tensor, boxes, labels


def _place(tensor: torch.Tensor, patch: Patch, scale: float, taken: list[list[float]],
           rng: np.random.Generator) -> list[float] | None:
    """Blend one patch into ``tensor`` at a free random place; its box there, or None when it
    is too small, too large or finds no free place."""
    _, height, width = tensor.shape
    factor = scale * rng.uniform(*SCALE_JITTER)
    px1, py1, px2, py2 = patch.box
    box_w, box_h = (px2 - px1) * factor, (py2 - py1) * factor
    longest_allowed = MAX_PASTED_SHARE * min(width, height)
    if max(box_w, box_h) > longest_allowed:
        factor *= longest_allowed / max(box_w, box_h)
        box_w, box_h = (px2 - px1) * factor, (py2 - py1) * factor
    if min(box_w, box_h) < MIN_PASTED_SIDE_PX:
        return None
    patch_h, patch_w = patch.pixels.shape[:2]
    size = (max(1, round(patch_w * factor)), max(1, round(patch_h * factor)))
    if size[0] > width or size[1] > height:
        return None
    mirrored = bool(rng.random() < 0.5)
    inner = (px1 * factor, py1 * factor, px2 * factor, py2 * factor)  # in the resized patch
    if mirrored:
        inner = (size[0] - inner[2], inner[1], size[0] - inner[0], inner[3])
    for _ in range(PLACEMENT_TRIES):
        left = int(rng.integers(0, width - size[0] + 1))
        top = int(rng.integers(0, height - size[1] + 1))
        extent = [left, top, left + size[0], top + size[1]]  # the blend margin included
        if not any(_overlap(extent, other) for other in taken):
            _blend(tensor, patch, size, (left, top), inner, mirrored, rng)
            return [left + inner[0], top + inner[1], left + inner[2], top + inner[3]]
    return None


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _blend(tensor: torch.Tensor, patch: Patch, size: tuple[int, int], at: tuple[int, int],
           box: tuple[float, float, float, float], mirrored: bool,
           rng: np.random.Generator) -> None:
    """Blend the patch, resized to ``size`` (and mirrored), in at ``at`` (its top-left),
    colour-matched to what it covers, opaque over ``box`` (in the resized, mirrored patch) and
    fading out to the patch's edge."""
    image = Image.fromarray(patch.pixels).resize(size, Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    if mirrored:
        pixels = pixels.flip(-1)
    left, top = at
    region = tensor[:, top:top + size[1], left:left + size[0]]
    gain = region.mean(dim=(1, 2)) / pixels.mean(dim=(1, 2)).clamp_min(1e-3)
    gain = gain * torch.from_numpy(rng.uniform(1 - COLOUR_JITTER, 1 + COLOUR_JITTER, 3)).float()
    pixels = (pixels * gain.clamp(*GAIN_LIMITS)[:, None, None]).clamp_(0.0, 1.0)
    alpha = _feathered_mask(size, box)
    region.mul_(1 - alpha).add_(pixels * alpha)


def _feathered_mask(size: tuple[int, int], box: tuple[float, float, float, float]
                    ) -> torch.Tensor:
    """1 inside ``box``, falling linearly to 0 at the edge of a ``size`` (width, height)
    patch: the lesser of the two axes' ramps."""
    width, height = size

    def ramp(length: int, low: float, high: float) -> torch.Tensor:
        centres = torch.arange(length, dtype=torch.float32) + 0.5
        rising = centres / max(low, 1e-6)
        falling = (length - centres) / max(length - high, 1e-6)
        return torch.minimum(rising, falling).clamp_(0.0, 1.0)

    return torch.minimum(ramp(width, box[0], box[2])[None, :],
                         ramp(height, box[1], box[3])[:, None])[None]
