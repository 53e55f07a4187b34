"""How many threads torch trains and predicts with, chosen from the cores other processes leave.

torch's default is one thread per core. On a small machine another busy process (a second
training, a test run) then makes torch's threads wait for each other at every operation: on two
cores, a training with two threads next to another busy process ran up to ten times slower than
with one thread. So a core counts as free only when other processes leave at least three
quarters of it idle, and torch gets the free cores, never fewer than one.

Only competitors count: processes at this process's priority or higher (a nice value no larger
than ours). One at a lower priority (``nice -n 19``) gives way to torch's threads and is left
aside. CPU time that no process we can see accounts for (the kernel, a process that started and
ended within the sample, another container) counts as competing: what cannot be attributed is
assumed to compete.

One moment's load is a poor guide to a whole training: a half-second sample before training
once caught Label Studio finishing its imports, and the run trained on one thread at half
speed. So ``CARSDEPO_TORCH_THREADS`` fixes the count outright, and a count chosen from the load
is chosen again as training goes (``ThreadRecheck``): lowered at once, raised only when two
checks in a row agree. A stretch of inference over many photos (a test split, a batch) takes
its count from the load when it starts (``torch_threads_from_load``): beside another busy
process, two threads predicted the demo's test photos at 172-200 ms each instead of 56.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import psutil

THREADS_ENVIRONMENT = "CARSDEPO_TORCH_THREADS"
FREE_CORE_SHARE = 0.75  # idle share of a core before it counts as free
SAMPLE_SECONDS = 0.5
RECHECK_SECONDS = 30.0  # training time between two checks, and the window each one measures


class ProcessCpu(NamedTuple):
    nice: int
    seconds: float  # user + system CPU time since the process started


ProcessKey = tuple[int, float]  # pid and start time: a reused pid is another process


@dataclass(frozen=True)
class CpuSnapshot:
    """The CPU time counters at one moment; two snapshots give the load between them."""

    taken: float  # time.monotonic()
    busy: float  # CPU seconds the machine has spent busy since boot
    own: float  # CPU seconds of this process
    nice: int  # this process's nice value
    others: dict[ProcessKey, ProcessCpu]  # every other process whose counters we may read


@dataclass(frozen=True)
class OtherLoad:
    """Cores' worth of CPU that other processes used over a window."""

    competing: float  # at this process's priority or higher, or not attributable
    lower_priority: float  # by processes with a larger nice value: left aside


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int
    # cores' worth of CPU competing processes used while sampling; None: the count was set by
    # CARSDEPO_TORCH_THREADS and nothing was measured
    busy_elsewhere: float | None
    lower_priority: float = 0.0  # cores' worth used at a lower priority, not counted

    @property
    def measured(self) -> bool:
        return self.busy_elsewhere is not None

    def describe(self) -> str:
        count = f"{self.threads} torch thread{'s' if self.threads != 1 else ''}"
        if self.busy_elsewhere is None:
            return f"{count} (set by {THREADS_ENVIRONMENT})"
        aside = (f", {self.lower_priority:.1f} at lower priority not counted"
                 if self.lower_priority >= 0.05 else "")
        return (f"{count} ({self.cores} cores, {self.busy_elsewhere:.1f} busy with other "
                f"processes{aside})")

    def change_note(self, previous: int) -> str:
        """How a training's log tells that it now runs on this choice instead of ``previous``
        threads (``benchmarks.bench_demo`` reads it back)."""
        return (f"torch threads {previous} -> {self.describe()}, re-checked every "
                f"{RECHECK_SECONDS:.0f} s of training")


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


def threads_from_environment() -> int | None:
    """``CARSDEPO_TORCH_THREADS`` as a thread count; None when it is unset or empty."""
    value = os.environ.get(THREADS_ENVIRONMENT, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENVIRONMENT}={value!r}: expected a positive whole number "
                         "of torch threads, or unset it to choose from the load")
    return int(value)


def choose_threads(seconds: float = SAMPLE_SECONDS) -> ThreadChoice:
    """``CARSDEPO_TORCH_THREADS`` when set; otherwise sample the load for ``seconds`` and
    apply :func:`threads_for`."""
    fixed = threads_from_environment()
    if fixed is not None:
        return ThreadChoice(fixed, usable_cores(), None)
    return _choice_for(measure_load(seconds))


@contextmanager
def torch_threads_from_load() -> Iterator[ThreadChoice]:
    """torch's thread count chosen now (:func:`choose_threads`) for the block, the previous
    count restored after it."""
    import torch  # here: the Dagster code location imports this module, not torch

    choice = choose_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    try:
        yield choice
    finally:
        torch.set_num_threads(previous)


def measure_load(seconds: float = SAMPLE_SECONDS) -> OtherLoad:
    """What other processes use, measured over ``seconds`` from now."""
    start = take_snapshot()
    time.sleep(seconds)
    return load_between(start, take_snapshot())


def take_snapshot() -> CpuSnapshot:
    """Read the counters: every process's (a few milliseconds for a hundred processes), then
    the machine's and this process's together, so that those two cover the same span."""
    own = psutil.Process()
    others = {}
    for process in psutil.process_iter(["nice", "cpu_times", "create_time"]):
        nice, times, started = (process.info[name] for name in
                                ("nice", "cpu_times", "create_time"))
        if process.pid != own.pid and None not in (nice, times, started):  # None: not readable
            others[(process.pid, started)] = ProcessCpu(nice, times.user + times.system)
    machine, mine = psutil.cpu_times(), own.cpu_times()
    return CpuSnapshot(time.monotonic(), _busy(machine), mine.user + mine.system, own.nice(),
                       others)


def load_between(start: CpuSnapshot, end: CpuSnapshot) -> OtherLoad:
    """The machine's busy time less this process's, split by the priority of who used it."""
    elapsed = end.taken - start.taken
    if elapsed <= 0:
        raise ValueError("the second snapshot must be taken after the first")
    others = max(0.0, (end.busy - start.busy) - (end.own - start.own))
    lower = min(others, lower_priority_seconds(start.others, end.others, end.nice))
    return OtherLoad((others - lower) / elapsed, lower / elapsed)


def lower_priority_seconds(before: Mapping[ProcessKey, ProcessCpu],
                           after: Mapping[ProcessKey, ProcessCpu], nice: int) -> float:
    """CPU seconds spent between two process tables by processes at a lower priority than
    ``nice`` (a larger nice value, as the later table has it). A process missing from
    ``before`` started in between, so all its time counts; one missing from ``after`` has
    ended, and what it used in between stays counted as competing."""
    return sum(max(0.0, cpu.seconds - (before[key].seconds if key in before else 0.0))
               for key, cpu in after.items() if cpu.nice > nice)


def rechecked_threads(current: int, recent: Sequence[int]) -> int:
    """The thread count to go on with, given the count now and the choices of the latest
    checks (oldest first). Lower at once to the latest choice: competing with a busy neighbour
    costs up to ten times. Raise only when the last two choices are both higher, to the smaller
    of them, so that one quiet window does not flap the count."""
    if recent and recent[-1] < current:
        return recent[-1]
    if len(recent) >= 2 and min(recent[-2:]) > current:
        return min(recent[-2:])
    return current


class ThreadRecheck:
    """Chooses the thread count again every ``period_s``, from the load since the previous
    check: the window is the training time in between, so nothing waits for a sample. Call
    :meth:`check` from the thread that runs torch, and apply what it returns there (torch's
    OpenMP thread count belongs to the calling thread)."""

    def __init__(self, threads: int, period_s: float = RECHECK_SECONDS):
        self.threads = threads
        self.period_s = period_s
        self._last = take_snapshot()
        self._recent: tuple[int, ...] = ()

    def check(self) -> ThreadChoice | None:
        """The new choice when the count should change now, else None (always None until
        ``period_s`` has passed since the last check)."""
        if time.monotonic() - self._last.taken < self.period_s:
            return None
        now = take_snapshot()
        choice = _choice_for(load_between(self._last, now))
        self._last = now
        self._recent = (*self._recent[-1:], choice.threads)
        threads = rechecked_threads(self.threads, self._recent)
        if threads == self.threads:
            return None
        self.threads = threads
        return dataclasses.replace(choice, threads=threads)


def _choice_for(load: OtherLoad) -> ThreadChoice:
    cores = usable_cores()
    competing = min(float(psutil.cpu_count() or cores), load.competing)
    return ThreadChoice(threads_for(cores, competing), cores, competing, load.lower_priority)


def _busy(times) -> float:
    """CPU seconds spent on anything but idling or waiting for I/O."""
    return sum(getattr(times, name, 0.0) for name in times._fields
               if name not in ("idle", "iowait", "guest", "guest_nice"))
