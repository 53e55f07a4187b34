"""Console output of the command line: progress lines and figures (Dagster runs log through
Dagster instead)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def say(message: str) -> None:
    """One line of progress on stderr, flushed (output often goes to a file or a pipe); stdout
    is kept for a command's result (a table, JSON), and Dagster's own log goes to stderr too."""
    print(message, file=sys.stderr, flush=True)


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
