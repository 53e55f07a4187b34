"""End-to-end wall time of `carsdepo demo`: the whole loop on embedded defaults.

    python -m benchmarks.bench_demo [--images 120] [--iterations 300]

Runs the demo as a user does, in a temporary CARSDEPO_HOME with Label Studio on a free port
(so it never meets a server a developer already runs), then stops that Label Studio. Records
the wall time of the whole command and, from its output, the seconds of each step.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._record import record

SUITE = "demo"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"^==> (?P<title>.+)$")
DONE = re.compile(r"^\s+done in (?P<seconds>\d+)s$")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def step_times(output: str) -> list[tuple[str, int]]:
    """(step title, seconds) for each step the demo printed, in order."""
    steps, title = [], None
    for line in output.splitlines():
        if match := STEP.match(line):
            title = match["title"]
        elif (match := DONE.match(line)) and title:
            steps.append((title, int(match["seconds"])))
            title = None
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="photos per synthetic batch")
    parser.add_argument("--iterations", type=int, default=300, help="training iterations")
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "carsdepo_assets.cli"]
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as home:
        env = {**os.environ, "CARSDEPO_HOME": home, "DAGSTER_HOME": f"{home}/dagster",
               "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_URI": ""}
        started = time.perf_counter()
        try:
            demo = subprocess.run(
                [*cli, "demo", "--images", str(args.images), "--iterations", str(args.iterations)],
                cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            )
            wall = time.perf_counter() - started
        finally:
            subprocess.run([*cli, "labelstudio", "stop"], cwd=PROJECT_ROOT, env=env,
                           capture_output=True)
    if demo.returncode != 0:
        sys.exit(f"carsdepo demo failed (exit {demo.returncode}):\n{demo.stderr[-3000:]}")
    data = f"`carsdepo demo --images {args.images} --iterations {args.iterations}`, fresh state"
    record(SUITE, "demo_wall_s", round(wall, 1), "s", data)
    for title, seconds in step_times(demo.stderr):  # progress goes to stderr
        record(SUITE, "demo_step_s", seconds, "s", f"{data}: {title}", step=title)


if __name__ == "__main__":
    main()
