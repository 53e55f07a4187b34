"""What a backbone sees in a photo: one pooled feature vector per image, for drift monitoring.

Light and colour statistics miss a batch whose photos show something new in the same light
(another framing, the panel turned, a new background). The features a trained backbone computes
do not: "Failing Loudly" (Rabanser et al., 2019) found pretrained-network features plus
two-sample tests the best shift detectors. Monitoring reduces these vectors to a few components
(``monitoring.embedding``) and tests them like its other features.

Each photo is resized to a square of ``side`` pixels and, per colour channel, standardised to
zero mean and unit spread before the backbone sees it. That takes exposure, contrast and a
colour cast out of the vector, so it measures what the photo shows, while the light features
measure how it is lit: a dim batch moves the light signal, not the content signal.

The vector is the ``c4`` and ``c5`` feature maps averaged over each quarter of the photo (a 2x2
grid), concatenated. A plain spatial mean forgets where things are: in ``bench_drift`` on the
real lensor photos it flagged about half of the 50-photo batches turned to portrait, the
quarters all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from carsdepo_assets.detection.backbones import BackboneBody, build_backbone_body
from carsdepo_assets.detection.backends import TrainedDetector

EMBED_SIDE = 224
POOLED_MAPS = ("c4", "c5")
POOL_GRID = 2  # each map averaged over a POOL_GRID x POOL_GRID grid of the photo
IMAGENET_BACKBONE = "efficientnet_lite0"
_MIN_CHANNEL_STD = 1e-3  # a flat channel is centred, not blown up


class ImageEmbedder:
    """Pooled backbone features of images; ``source`` says which backbone (for the report)."""

    def __init__(self, body: BackboneBody, source: str, side: int = EMBED_SIDE):
        if side < 32:
            raise ValueError(f"embedding side {side} is too small: the backbone needs >= 32 px")
        self.body = body.eval()
        self.source = source
        self.side = side
        self.dimensions = POOL_GRID ** 2 * sum(body.out_channels[name] for name in POOLED_MAPS)
        self._device = next(body.parameters()).device

    @classmethod
    def of_detector(cls, detector: TrainedDetector, source: str) -> ImageEmbedder:
        """The backbone inside a trained detector (either backend wraps the same body)."""
        bodies = [module for module in detector.model.modules()
                  if isinstance(module, BackboneBody)]
        if not bodies:
            raise ValueError(f"{source}: the detector's model holds no backbone body to embed "
                             "with")
        return cls(bodies[0], source)

    @classmethod
    def imagenet(cls, name: str = IMAGENET_BACKBONE) -> ImageEmbedder:
        """A packaged ImageNet-pretrained backbone, for when no trained detector exists."""
        body = build_backbone_body(name, norm="frozen_bn", pretrained=True)
        return cls(body, f"{name} (ImageNet weights)")

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """One row of ``dimensions`` floats per image; the images are not changed."""
        if not images:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        batch = torch.from_numpy(np.stack([self._standardised(image) for image in images]))
        with torch.inference_mode():
            maps = self.body(batch.to(self._device))
            pooled = [F.adaptive_avg_pool2d(maps[name], POOL_GRID).flatten(1)
                      for name in POOLED_MAPS]
        return torch.cat(pooled, dim=1).cpu().numpy().astype(np.float32)

    def embed_paths(self, paths: Iterable[Path], chunk_size: int = 8) -> Iterator[np.ndarray]:
        """Embedding of each image file in turn, ``chunk_size`` images in memory at a time."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size}: must be at least 1")
        chunk: list[Image.Image] = []
        for path in paths:
            chunk.append(self.open(Path(path)))
            if len(chunk) == chunk_size:
                yield from self.embed(chunk)
                chunk = []
        yield from self.embed(chunk)

    def open(self, path: Path) -> Image.Image:
        """The file at ``path``, decoded small (JPEG DCT scaling); errors name the path."""
        try:
            with Image.open(path) as image:
                image.draft("RGB", (self.side, self.side))
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"cannot embed image {path}: {error}") from error

    def _standardised(self, image: Image.Image) -> np.ndarray:
        square = image.convert("RGB").resize((self.side, self.side), Image.Resampling.BILINEAR)
        pixels = np.asarray(square, dtype=np.float32).transpose(2, 0, 1)
        mean = pixels.mean(axis=(1, 2), keepdims=True)
        spread = np.maximum(pixels.std(axis=(1, 2), keepdims=True), _MIN_CHANNEL_STD * 255.0)
        return (pixels - mean) / spread
