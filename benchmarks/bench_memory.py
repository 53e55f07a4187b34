"""Peak memory against batch size for the stages that walk a whole batch: ingestion, profiling
(image features into a whylogs profile) and batch prediction.

    python -m benchmarks.bench_memory [--sizes 100 500 2000] [--stages ingest profile predict]

Each (stage, batch size) runs in a fresh subprocess. After its imports and a warm-up on the
first images, the worker resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) and
records how far resident memory rose above that point while the stage processed the batch.
Pillow's and torch's buffers live outside Python's allocator, so resident memory is the honest
measure. The growth must stay flat as the batch grows: each stage holds a bounded number of
images at a time.
Prediction uses an untrained detector (pretrained backbone, random heads) at the default size:
its memory is the model's, whatever the weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._record import record
from benchmarks.bench_ingest import _status_mib, make_batch

SUITE = "memory"
STAGES = ("ingest", "profile", "predict")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
WARM_UP_IMAGES = 2


def _reset_peak() -> float:
    """Reset VmHWM to the current resident size (Linux >= 4.0) and return that size."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def _stage_runner(stage: str, home: Path, batch: str):
    """(warm_up, run) for ``stage``; run returns the number of images it handled."""
    from carsdepo_assets.images.ingest import ingest_batch, iter_stored_images
    from carsdepo_assets.state import StateLayout

    layout = StateLayout(home).ensure()
    if stage == "ingest":
        source = home.parent / "source"

        def warm_up() -> None:
            warm = home.parent / "warm"
            warm.mkdir()
            for path in sorted(source.iterdir())[:WARM_UP_IMAGES]:
                shutil.copy(path, warm / path.name)
            ingest_batch(warm, "warm-up", StateLayout(home.parent / "warm-home").ensure())

        return warm_up, lambda: len(ingest_batch(source, batch, layout).rows)
    paths = [path for _, path in iter_stored_images(layout, batch)]
    if stage == "profile":
        from carsdepo_assets.monitoring.features import iter_image_features
        from carsdepo_assets.monitoring.profiles import profile_rows, row_count

        return (lambda: profile_rows(iter_image_features(paths[:WARM_UP_IMAGES])),
                lambda: row_count(profile_rows(iter_image_features(paths))))
    from PIL import Image

    from carsdepo_assets.detection.config import DetectorConfig
    from carsdepo_assets.detection.torchvision_backend import TorchvisionDetector, build_model
    from carsdepo_assets.prediction.batch import DEFAULT_CHUNK, predict_batch
    from carsdepo_assets.prediction.models import ModelRef

    config = DetectorConfig(backend="torchvision", device="cpu")
    detector = TorchvisionDetector(build_model(config).eval(), config)
    # A whole chunk, so that torch's allocator has grown to a chunk's working set.
    return (lambda: detector.predict([Image.open(p) for p in paths[:DEFAULT_CHUNK]]),
            lambda: predict_batch(layout, batch, detector, ModelRef("bench", "0")).images)


def worker(stage: str, home: Path, batch: str) -> dict:
    """In the subprocess: warm up, reset the peak, run the stage, report memory."""
    warm_up, run = _stage_runner(stage, home, batch)
    warm_up()
    baseline = _reset_peak()
    started = time.perf_counter()
    images = run()
    return {"stage": stage, "images": images, "seconds": time.perf_counter() - started,
            "baseline_rss_mib": baseline, "peak_rss_mib": _status_mib("VmHWM"),
            "growth_mib": _status_mib("VmHWM") - baseline}


def measure_stage(stage: str, home: Path, batch: str) -> dict:
    """Run ``stage`` over ``batch`` (``home.parent / "source"`` for ingestion, the ingested
    batch of ``home`` otherwise) in a fresh interpreter; its memory figures."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--worker", stage, str(home), batch],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{stage} worker failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def prepare_batch(root: Path, count: int, size: tuple[int, int]) -> Path:
    """``root/source`` with ``count`` photos, ingested into ``root/home`` as batch "bench"."""
    from carsdepo_assets.images.ingest import ingest_batch
    from carsdepo_assets.state import StateLayout

    source = root / "source"
    source.mkdir(parents=True)
    make_batch(source, count, size)
    home = root / "home"
    ingest_batch(source, "bench", StateLayout(home).ensure())
    return home


def run(sizes: list[int], stages: list[str], size: tuple[int, int]) -> None:
    growth: dict[str, list[float]] = {stage: [] for stage in stages}
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            prepared = prepare_batch(Path(tmp) / "prepared", count, size)
            for stage in stages:
                home = prepared
                if stage == "ingest":  # a fresh store: ingestion must do the whole work
                    home = Path(tmp) / "ingest" / "home"
                    shutil.copytree(prepared.parent / "source", home.parent / "source")
                result = measure_stage(stage, home, "bench")
                data = (f"{count} files {size[0]}x{size[1]} JPEG ({result['images']} handled); "
                        "peak resident memory above the level after imports and warm-up")
                record(SUITE, f"{stage}_peak_rss_growth", round(result["growth_mib"], 1), "MiB",
                       data, batch_size=count, stage=stage)
                record(SUITE, f"{stage}_images_per_s",
                       round(result["images"] / result["seconds"], 1), "images/s", data,
                       batch_size=count, stage=stage)
                growth[stage].append(result["growth_mib"])
    for stage, values in growth.items():
        record(SUITE, f"{stage}_rss_growth_spread", round(max(values) - min(values), 1), "MiB",
               f"largest minus smallest peak growth over batch sizes {sizes}: flat means the "
               "stage streams", stage=stage)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--worker", nargs=3, metavar=("STAGE", "HOME", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        stage, home, batch = args.worker
        print(json.dumps(worker(stage, Path(home), batch)))
        return
    run(args.sizes, args.stages, (args.width, args.height))


if __name__ == "__main__":
    main()
