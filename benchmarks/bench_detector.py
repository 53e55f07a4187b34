"""Detector speed and accuracy on synthetic panels, per configuration variant.

    python -m benchmarks.bench_detector [--variants default,scratch] [--train-images 300]

For each variant: train on a synthetic set (the demo's budget: the config's iterations), then
record training images/s, inference ms per 640x480 photo (model input 512x384; p50/p95 at batch
1 and per image at batch 8), and AP50 / AP / per-class AP50 / "None" accuracy on a held-out
synthetic set. Targets (issue 5, two CPU cores): inference p50 <= 100 ms at batch 1, training
>= 4 images/s, AP50 >= 0.90, "None" accuracy >= 0.95; each figure records its target and by how
much it was missed. Wall-clock figures count time spent waiting for a core on a shared machine;
CPU-time figures are recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._record import record
from carsdepo_assets.detection.backends import TrainedDetector, train_detector
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import CocoSplit
from carsdepo_assets.detection.metrics import (
    COCO_MAX_DETECTIONS,
    COCO_SCORE_FLOOR,
    evaluate_detections,
)
from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CLASS_NAMES

SUITE = "detector"
VARIANTS: dict[str, dict] = {
    "default": {},  # the cpu preset
    "scratch": {"pretrained": False},  # same backbone and budget, random initialisation
    "backbone_lr_1": {"backbone_lr_factor": 1.0},  # the pretrained body at the full rate
    "lite0_pretrained": {"backbone": "efficientnet_lite0", "pretrained": True},
    "resnet_tiny_scratch": {"backbone": "resnet_tiny", "pretrained": False},
}
# (figure, target, "min" when higher is better / "max" when lower is better)
TARGETS = {
    "infer_ms_p50_batch1": (100.0, "max"),
    "train_images_per_s": (4.0, "min"),
    "synthetic_AP50": (0.90, "min"),
    "synthetic_none_accuracy": (0.95, "min"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="default,scratch",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--backends", default="torchvision",
                        help="comma-separated: torchvision, detectron2 (when built)")
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=40)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=0,
                        help="override the config's training iterations (0: keep)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: the cores other processes leave free)")
    parser.add_argument("--latency-runs", type=int, default=30)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    lines: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-detector-") as scratch:
        root = Path(scratch)
        train, val, test = (
            CocoSplit.from_folder(generate_dataset(root / name, count, seed).out_dir)
            for name, count, seed in (("train", args.train_images, 101),
                                      ("val", args.val_images, 202),
                                      ("test", args.test_images, 303))
        )
        for backend in args.backends.split(","):
            for variant in args.variants.split(","):
                lines += bench_variant(backend, variant, train, val, test,
                                       root / backend / variant, args)
    return lines


def bench_variant(backend: str, variant: str, train: CocoSplit, val: CocoSplit,
                  test: CocoSplit, workdir: Path, args: argparse.Namespace) -> list[dict]:
    overrides = dict(VARIANTS[variant], backend=backend, num_threads=args.threads)
    if args.iterations:
        overrides["iterations"] = args.iterations
    config = DetectorConfig(**overrides)
    cpu = time.process_time()
    detector = train_detector(train, val, config, workdir, _print_progress)
    cpu = time.process_time() - cpu
    summary = detector.summary
    used = detector.config
    data = (f"{backend} {variant}: {used.backbone} pretrained={used.pretrained}, "
            f"{summary.iterations} it x {used.batch_size} on {args.train_images} "
            f"synthetic 640x480, input {used.max_size}x{used.min_size}")
    figures = {
        "train_images_per_s": (summary.images_per_second, "images/s",
                               {"cpu_images_per_s": round(summary.images_seen / cpu, 2),
                                "wall_s": summary.wall_s,
                                "best_iteration": summary.best_iteration}),
    }
    figures.update(_latency(detector, test, args.latency_runs))
    figures.update(_accuracy(detector, test))
    return [
        record(SUITE, name, round(value, 4), unit, data, backend=backend, variant=variant,
               threads=used.num_threads, **_target(name, value), **extra)
        for name, (value, unit, extra) in figures.items()
    ]


def _latency(detector: TrainedDetector, test: CocoSplit, runs: int) -> dict:
    paths = sorted(test.image_root.iterdir())
    images = [Image.open(path).convert("RGB") for path in paths[:max(runs, 8)]]
    detector.predict(images[:1])  # warm-up
    single = np.array([_timed_ms(detector, [image]) for image in images[:runs]])
    batched = np.array([_timed_ms(detector, images[start:start + 8])
                        for start in range(0, len(images) - 7, 8)]) / 8
    figures = {}
    for name, timings in (("batch1", single), ("batch8", batched)):
        for q in (50, 95):
            wall, cpu = np.percentile(timings, q, axis=0)
            figures[f"infer_ms_p{q}_{name}"] = (float(wall), "ms/image",
                                                {"cpu_ms": round(float(cpu), 1)})
    return figures


def _timed_ms(detector: TrainedDetector, images: list[Image.Image]) -> tuple[float, float]:
    """Wall-clock and process CPU milliseconds of one ``predict`` call."""
    wall, cpu = time.perf_counter(), time.process_time()
    detector.predict(images)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def _accuracy(detector: TrainedDetector, test: CocoSplit) -> dict:
    coco = json.loads(test.annotations.read_text())
    predictions = {}
    with detector.output_limits(COCO_SCORE_FLOOR, COCO_MAX_DETECTIONS):
        for image in coco["images"]:
            with Image.open(test.image_root / image["file_name"]) as photo:
                predictions[image["id"]] = detector.predict([photo.convert("RGB")])[0]
    result = evaluate_detections(coco, predictions, detector.config.score_threshold)
    metrics = result.flat_metrics()
    figures = {
        "synthetic_AP50": (metrics.get("AP50", 0.0), "AP", {}),
        "synthetic_AP": (metrics.get("AP", 0.0), "AP", {}),
        "synthetic_none_accuracy": (metrics.get("none_accuracy", 0.0), "accuracy",
                                    {"threshold": detector.config.score_threshold}),
    }
    for name in CLASS_NAMES:
        figures[f"synthetic_AP50_{name}"] = (metrics.get(f"AP50_{name}", 0.0), "AP", {})
    return figures


def _target(name: str, value: float) -> dict:
    if name not in TARGETS:
        return {}
    target, kind = TARGETS[name]
    met = value <= target if kind == "max" else value >= target
    return {"target": target, "target_met": met,
            "missed_by": 0.0 if met else round(abs(value - target), 4)}


def _print_progress(progress) -> None:
    if progress.iteration % 50 == 0 or progress.val_metrics:
        print(f"  it {progress.iteration}/{progress.iterations} "
              f"loss {progress.losses['total']:.3f} {progress.images_per_second:.2f} img/s "
              f"{progress.val_metrics or ''}", flush=True)


if __name__ == "__main__":
    main()
