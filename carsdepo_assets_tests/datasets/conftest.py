"""Real images in a temporary image store, and labeled images pointing at them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from carsdepo_assets.labeling.snapshot import LabeledBox, LabeledImage
from carsdepo_assets.state import StateLayout

StoreImage = Callable[..., LabeledImage]


def encode_image(seed: int, size: tuple[int, int], ext: str) -> bytes:
    """A small noisy RGB picture, different for every seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format={"jpg": "JPEG", "png": "PNG"}[ext])
    return buffer.getvalue()


@pytest.fixture
def store_image(carsdepo_home: StateLayout) -> StoreImage:
    """Put a real image in the store and return its labels; ``boxes`` are (label, x, y, w, h)."""

    def store(
        seed: int,
        boxes: tuple[tuple[str, float, float, float, float], ...] = (),
        *,
        size: tuple[int, int] = (96, 64),
        ext: str = "png",
        **labels,
    ) -> LabeledImage:
        data = encode_image(seed, size, ext)
        sha = hashlib.sha256(data).hexdigest()
        path = carsdepo_home.images / sha[:2] / f"{sha}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return LabeledImage(
            sha256=sha, width=size[0], height=size[1],
            boxes=tuple(LabeledBox(label, tuple(bbox)) for label, *bbox in boxes),
            **{"no_damage": not boxes, **labels},
        )

    return store
