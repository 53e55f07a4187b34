"""Console output of the command line: progress lines and figures (Dagster runs log through
Dagster instead)."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_console: TextIO | None = None  # where say() writes while stderr goes to a log file
OTHER_PACKAGES = r"(?!carsdepo_assets(\.|$))"  # any module name but carsdepo's own
# MLflow's own console output: its logger (warnings about pickled models, ...) and the
# artifact progress bars; a value the user set stays.
QUIET_ENVIRONMENT = {"MLFLOW_LOGGING_LEVEL": "ERROR",
                     "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def quiet_third_parties() -> None:
    """Hide the warnings of other packages (Dagster's Beta and Preview warnings, MLflow's,
    torch's), raised in their code or about carsdepo's use of them, and MLflow's logged
    warnings: they speak to carsdepo's developers, not to the person at the terminal.
    carsdepo's own warnings keep Python's default treatment, and ``-W`` or ``PYTHONWARNINGS``
    (a developer asking for warnings) leaves the warning filters as they were."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if sys.warnoptions or getattr(warnings.showwarning, "quiets_third_parties", False):
        return
    warnings.filterwarnings("ignore", module=OTHER_PACKAGES)
    show = warnings.showwarning

    def show_unless_third_party(message, category, filename, lineno, file=None, line=None):
        if category.__module__ == "builtins" or category.__module__.startswith(
                "carsdepo_assets"):
            show(message, category, filename, lineno, file, line)

    show_unless_third_party.quiets_third_parties = True
    warnings.showwarning = show_unless_third_party


def say(message: str) -> None:
    """One line of progress on stderr, flushed (output often goes to a file or a pipe); stdout
    is kept for a command's result (a table, JSON), and Dagster's own log goes to stderr too."""
    print(message, file=_console or sys.stderr, flush=True)


@contextmanager
def stderr_to_log(path: Path) -> Iterator[TextIO]:
    """Send everything written to stderr (Dagster's log with its stack traces, warnings, output
    of libraries and child processes) to ``path``, appended, while ``say`` keeps writing to the
    console; yields the console stream."""
    global _console
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        with path.open("a", buffering=1) as log:
            os.dup2(log.fileno(), 2)
            _console = console
            try:
                yield console
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                _console = None
    finally:
        os.close(saved)
        console.close()


def progress_printer(label: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback printing ``label: done/total`` about every 10% (and
    at the end) to stderr."""

    def report(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done % step == 0:
            print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)

    return report


def figure(value: float | None) -> str:
    """A metric for people: three decimals, or ``n/a`` when it is undefined."""
    return "n/a" if value is None else f"{value:.3f}"
