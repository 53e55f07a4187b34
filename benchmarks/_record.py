"""Benchmark results as JSON lines: one object per measured figure.

Each line: ``{"name", "value", "unit", "data", "machine", "recorded_at"}`` appended to
``benchmarks/results/<suite>.jsonl``, so results accumulate and can be compared over time.
``$CARSDEPO_BENCH_RESULTS`` sends them elsewhere (``run_all --quick`` uses a scratch folder, so
smoke runs never mix with the figures the README reports).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(
    os.environ.get("CARSDEPO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def machine_description() -> str:
    cores = os.cpu_count() or 0
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{cpu_model()}, {platform.machine()} {cores} cores, {python}"


def cpu_model() -> str:
    """The CPU's name as the kernel reports it (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def record(suite: str, name: str, value: float, unit: str, data: str, **extra) -> dict:
    """Append one figure to ``results/<suite>.jsonl`` and echo it on stdout."""
    line = {
        "name": name,
        "value": value,
        "unit": unit,
        "data": data,
        "machine": machine_description(),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f"{suite}.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)
    return line
