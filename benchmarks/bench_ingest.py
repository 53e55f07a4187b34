"""Ingestion throughput and peak memory against batch size.

    python -m benchmarks.bench_ingest [--sizes 100 500 2000] [--width 640 --height 480]

Each batch is ingested in a fresh subprocess so that its peak resident memory (``VmHWM``)
belongs to that batch alone; Pillow's pixel buffers live outside Python's allocator, which is
why tracemalloc would under-count. Memory must stay flat as the batch grows: ingestion handles
one file at a time. Batches mix 90% RGB JPEGs (kept as they are), 5% greyscale JPEGs
(normalised to PNG) and 5% truncated JPEGs (quarantined).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._record import record

SUITE = "ingest"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_batch(folder: Path, count: int, size: tuple[int, int]) -> None:
    """``count`` distinct photo-like JPEGs (smooth gradient plus sensor noise)."""
    rng = np.random.default_rng(0)
    width, height = size
    ramp = np.linspace(30, 220, width)[None, :, None]
    for index in range(count):
        pixels = ramp + rng.normal(0, 10, (height, width, 3)) + rng.integers(0, 30, 3)
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        kind = index % 20
        if kind == 0:
            image = image.convert("L")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=88)
        data = buffer.getvalue()
        if kind == 1:
            data = data[: len(data) // 2]
        (folder / f"car-{index:05d}.jpg").write_bytes(data)


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc (Linux), in MiB.

    ``VmHWM`` is the peak resident size of this process image; ``ru_maxrss`` would not do, as
    Linux carries it over from the parent (which held the generated batch) across exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}; this benchmark needs Linux")


def worker(source: Path, home: Path) -> None:
    """Runs in the subprocess: ingest, then print one JSON line of measurements."""
    from carsdepo_assets.images.ingest import ingest_batch
    from carsdepo_assets.state import StateLayout

    layout = StateLayout(home).ensure()
    baseline = _status_mib("VmRSS")
    started = time.perf_counter()
    manifest = ingest_batch(source, "bench", layout)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds, "files": len(manifest.rows), "counts": manifest.counts,
        "baseline_rss_mib": baseline, "peak_rss_mib": _status_mib("VmHWM"),
    }))


def measure(count: int, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        source, home = Path(tmp) / "batch", Path(tmp) / "home"
        source.mkdir()
        make_batch(source, count, size)
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_ingest", "--worker", str(source), str(home)],
            cwd=PROJECT_ROOT, check=True, capture_output=True, text=True,
        )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    data = (f"{count} files {size[0]}x{size[1]} JPEG (90% RGB kept, 5% grey normalised, "
            f"5% truncated), counts {result['counts']}")
    record(SUITE, "ingest_throughput", round(count / result["seconds"], 1), "images/s", data,
           batch_size=count)
    record(SUITE, "ingest_peak_rss", round(result["peak_rss_mib"], 1), "MiB", data,
           batch_size=count)
    growth = result["peak_rss_mib"] - result["baseline_rss_mib"]
    record(SUITE, "ingest_rss_growth", round(growth, 1), "MiB",
           data + "; peak minus the resident memory just before ingesting", batch_size=count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--worker", nargs=2, metavar=("SOURCE", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]))
        return
    for count in args.sizes:
        measure(count, (args.width, args.height))


if __name__ == "__main__":
    main()
