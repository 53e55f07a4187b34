"""Run every benchmark (``benchmarks/bench_*.py``), each in its own process, one after another.

    python -m benchmarks.run_all [--quick] [--only synth ingest ...]

Each benchmark appends JSON lines to ``benchmarks/results/<suite>.jsonl`` (see ``_record``).
``--quick`` runs each on small inputs (``QUICK_ARGS``) to prove that all of them work, in
minutes; its results go to a scratch folder and are printed, never mixed with the real figures.
A benchmark that fails does not stop the others; the exit code says whether any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report

BENCH_DIR = Path(__file__).resolve().parent
# Small inputs per benchmark for --quick; a benchmark missing here runs with its defaults.
QUICK_ARGS: dict[str, list[str]] = {
    "bench_synth": ["--images", "40"],
    "bench_ingest": ["--sizes", "40", "160"],
    "bench_features": ["--images", "40"],
    "bench_memory": ["--sizes", "40", "160", "--width", "320", "--height", "240"],
    "bench_detector": ["--variants", "default", "--train-images", "24", "--val-images", "8",
                       "--test-images", "12", "--iterations", "6", "--latency-runs", "3"],
    "bench_inference": ["--quick"],
    "bench_paths": ["--quick"],
    "bench_drift": ["--quick"],
    "bench_demo": ["--seeds", "7", "--images", "40", "--iterations", "10"],
    "bench_real": ["--iterations", "5"],
}


def discover() -> list[str]:
    return sorted(path.stem for path in BENCH_DIR.glob("bench_*.py"))


def run_one(name: str, quick: bool, env: dict[str, str]) -> tuple[int, float]:
    args = QUICK_ARGS.get(name, []) if quick else []
    if quick and name not in QUICK_ARGS:
        print(f"==> {name}: no quick settings, running its defaults", flush=True)
    print(f"==> {name} {' '.join(args)}".rstrip(), flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args],
                          cwd=BENCH_DIR.parent, env=env)
    return done.returncode, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, scratch results")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="benchmarks to run, e.g. ingest memory (default: all)")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = {name if name.startswith("bench_") else f"bench_{name}" for name in args.only}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"no such benchmark: {', '.join(sorted(unknown))} "
                         f"(have: {', '.join(names)})")
        names = [name for name in names if name in wanted]
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as scratch:
        env = dict(os.environ)
        if args.quick:
            env["CARSDEPO_BENCH_RESULTS"] = scratch
        outcomes = {name: run_one(name, args.quick, env) for name in names}
        print("\n==> summary")
        for name, (code, seconds) in outcomes.items():
            print(f"    {name:<20} {'ok' if code == 0 else f'FAILED (exit {code})':<18} "
                  f"{seconds:7.0f}s")
        if args.quick:
            print("\n" + report.render(report.latest(Path(scratch))))
    return 0 if all(code == 0 for code, _ in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
