"""Monitoring throughput: image features per second, features plus whylogs profile, and
features plus the content embedding (the pass ``batch_profile`` makes once there is a champion).

Generates synthetic JPEGs (carsdepo_assets.synth) into a temporary folder, then measures
``iter_image_features`` alone, streamed into ``profile_rows``, and ``light_and_embeddings``
with an EfficientNet-Lite0 backbone (the packaged ImageNet weights: the same network as the
default champion's). Results are appended as JSON lines to ``benchmarks/results/features.jsonl``.

    .venv/bin/python -m benchmarks.bench_features --images 300 --size 640x480
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._record import record
from carsdepo_assets.assets.monitoring import light_and_embeddings
from carsdepo_assets.detection.embeddings import ImageEmbedder
from carsdepo_assets.monitoring.features import iter_image_features
from carsdepo_assets.monitoring.profiles import profile_rows
from carsdepo_assets.synth import generate_dataset


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="photos to generate (300)")
    parser.add_argument("--size", type=_size, default=(640, 480), help="WIDTHxHEIGHT (640x480)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = args.size

    with tempfile.TemporaryDirectory(prefix="bench-features-") as folder:
        result = generate_dataset(Path(folder), args.images, args.seed, width=width,
                                  height=height)
        paths = sorted(result.images_dir.glob("*.jpg"))
        data = f"{len(paths)} synthetic {width}x{height} JPEGs"
        for _ in iter_image_features(paths[:5]):  # warm up imports and caches
            pass

        started = time.perf_counter()
        for _ in iter_image_features(paths):
            pass
        record("features", "feature_extraction_images_per_s",
               round(len(paths) / (time.perf_counter() - started), 1), "images/s", data)

        started = time.perf_counter()
        profile_rows(iter_image_features(paths))
        record("features", "features_and_profile_images_per_s",
               round(len(paths) / (time.perf_counter() - started), 1), "images/s", data)

        embedder = ImageEmbedder.imagenet()
        list(light_and_embeddings(paths[:8], embedder))  # warm up
        started = time.perf_counter()
        for _ in light_and_embeddings(paths, embedder):
            pass
        record("features", "features_and_content_embedding_images_per_s",
               round(len(paths) / (time.perf_counter() - started), 1), "images/s",
               f"{data}; {embedder.source}, {torch.get_num_threads()} torch threads")


if __name__ == "__main__":
    main()
