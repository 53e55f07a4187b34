"""The backbone embedding monitoring profiles as content: real EfficientNet-Lite0 (ImageNet
weights, as packaged) on synthetic panels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from carsdepo_assets.detection.embeddings import ImageEmbedder
from carsdepo_assets.synth import image_rng, render_panel


@pytest.fixture(scope="module")
def embedder() -> ImageEmbedder:
    return ImageEmbedder.imagenet()


@pytest.fixture(scope="module")
def panels() -> list[Image.Image]:
    return [render_panel(image_rng(3, index), 208, 160, "normal", damaged=True)[0]
            for index in range(4)]


def _distance(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return np.linalg.norm(first - second, axis=1)


def test_the_embedding_measures_what_the_photo_shows_not_how_it_is_lit(embedder, panels):
    """Darker photos embed almost alike; the same pixels turned by 90 degrees do not."""
    original = embedder.embed(panels)
    darker = embedder.embed([ImageEnhance.Brightness(p).enhance(0.7) for p in panels])
    turned = embedder.embed([p.transpose(Image.Transpose.ROTATE_90) for p in panels])

    assert original.shape == (4, embedder.dimensions) and np.isfinite(original).all()
    assert (_distance(original, darker) < 0.25 * _distance(original, turned)).all()


def test_files_embed_in_chunks_like_images_in_memory(embedder, panels, tmp_path):
    paths = []
    for index, panel in enumerate(panels):
        paths.append(tmp_path / f"panel-{index}.png")
        panel.save(paths[-1])
    streamed = np.stack(list(embedder.embed_paths(paths, chunk_size=3)))
    assert np.allclose(streamed, embedder.embed(panels), atol=1e-4)


def test_an_unreadable_file_is_named_and_a_tiny_side_refused(embedder, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot embed image .*broken.jpg"):
        list(embedder.embed_paths([broken]))
    with pytest.raises(ValueError, match="too small"):
        ImageEmbedder(embedder.body, "tiny", side=16)
