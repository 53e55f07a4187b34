"""How many threads torch trains and predicts with, chosen from the cores other processes leave.

torch's default is one thread per core. On a small machine another busy process (a second
training, a test run) then makes torch's threads wait for each other at every operation: on two
cores, a training with two threads next to another busy process ran up to ten times slower than
with one thread. So a core counts as free only when other processes leave at least three
quarters of it idle, and torch gets the free cores, never fewer than one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import psutil

FREE_CORE_SHARE = 0.75  # idle share of a core before it counts as free
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int
    busy_elsewhere: float  # cores' worth of CPU other processes used while sampling

    def describe(self) -> str:
        return (f"{self.threads} torch thread{'s' if self.threads != 1 else ''} "
                f"({self.cores} cores, {self.busy_elsewhere:.1f} busy with other processes)")


def threads_for(cores: int, busy_elsewhere: float) -> int:
    """The thread count for ``cores`` usable cores of which ``busy_elsewhere`` cores' worth is
    used by other processes: the cores left at least ``FREE_CORE_SHARE`` idle, at least one."""
    if cores < 1:
        raise ValueError(f"cores={cores}: must be at least 1")
    free = cores - max(0.0, busy_elsewhere)
    return max(1, min(cores, math.floor(free + (1.0 - FREE_CORE_SHARE))))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_elsewhere(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU that other processes use, measured over ``seconds``."""
    own = psutil.Process()
    before_all, before_own = psutil.cpu_times(), own.cpu_times()
    started = time.monotonic()
    time.sleep(seconds)
    after_all, after_own = psutil.cpu_times(), own.cpu_times()
    elapsed = time.monotonic() - started
    busy = _busy(after_all) - _busy(before_all)
    mine = (after_own.user + after_own.system) - (before_own.user + before_own.system)
    return max(0.0, (busy - mine) / elapsed)


def choose_threads(seconds: float = SAMPLE_SECONDS) -> ThreadChoice:
    """Sample the machine now and apply :func:`threads_for`."""
    cores = usable_cores()
    load = min(float(psutil.cpu_count() or cores), busy_elsewhere(seconds))
    return ThreadChoice(threads_for(cores, load), cores, load)


def _busy(times) -> float:
    """CPU seconds spent on anything but idling or waiting for I/O."""
    return sum(getattr(times, name, 0.0) for name in times._fields
               if name not in ("idle", "iowait", "guest", "guest_nice"))
