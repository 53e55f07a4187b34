"""Synthetic generator throughput: photos per second, written to disk as JPEG plus COCO.

    python -m benchmarks.bench_synth [--images 500] [--width 640 --height 480] [--cores 1]

The target (issue 3) is 500 photos of 640x480 well under a minute on one core; by default the
process is pinned to one core so the figure does not depend on how many the machine has.
Records ``synth_images_per_s`` (wall clock) with the CPU-time rate alongside, since on a
shared machine the wall clock also counts time spent waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks._record import record
from carsdepo_assets.synth import LIGHTING_PRESETS, generate_dataset

SUITE = "synth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="photos to generate (500)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lighting", choices=sorted(LIGHTING_PRESETS), default="normal")
    parser.add_argument(
        "--cores", type=int, default=1, help="pin the process to this many cores (0: no pinning)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as scratch:
        wall, cpu = time.perf_counter(), time.process_time()
        result = generate_dataset(
            Path(scratch),
            args.images,
            args.seed,
            args.lighting,
            width=args.width,
            height=args.height,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return record(
        SUITE,
        "synth_images_per_s",
        round(args.images / wall, 2),
        "images/s",
        f"{args.images} synthetic {args.width}x{args.height}",
        cpu_images_per_s=round(args.images / cpu, 2),
        wall_s=round(wall, 2),
        cores=args.cores or os.cpu_count(),
        lighting=args.lighting,
        clean=result.n_clean,
        instances=result.instances_per_class,
    )


if __name__ == "__main__":
    main()
