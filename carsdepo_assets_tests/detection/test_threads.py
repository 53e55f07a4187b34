"""The torch thread-count rule: free cores only, never fewer than one thread; only competitors
count; CARSDEPO_TORCH_THREADS fixes it; during training it is chosen again without flapping."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import psutil
import pytest
import torch

from carsdepo_assets.detection import backends
from carsdepo_assets.detection import threads as thread_choice
from carsdepo_assets.detection.backends import TrainProgress, resolve_config
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.threads import (
    THREADS_ENVIRONMENT,
    OtherLoad,
    ProcessCpu,
    ThreadChoice,
    ThreadRecheck,
    choose_threads,
    load_between,
    lower_priority_seconds,
    measure_load,
    rechecked_threads,
    take_snapshot,
    threads_for,
    torch_threads_from_load,
)


@pytest.fixture(autouse=True)
def no_thread_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the developer's shell exports, these tests choose from the load."""
    monkeypatch.delenv(THREADS_ENVIRONMENT, raising=False)


@pytest.mark.parametrize(
    ("cores", "busy", "threads"),
    [
        (2, 0.0, 2),  # idle: every core
        (2, 0.2, 2),  # a little background work leaves both cores usable
        (2, 0.3, 1),  # a core less than three quarters idle is not free
        (2, 1.0, 1),  # another training on one core: one thread, not two that wait
        (2, 2.0, 1),  # everything busy: still one thread
        (2, 5.0, 1),
        (16, 3.5, 12),
        (1, 0.0, 1),
        (4, -0.1, 4),  # measurement noise below zero counts as idle
    ],
)
def test_threads_take_only_the_cores_other_processes_leave_free(cores, busy, threads):
    assert threads_for(cores, busy) == threads


def test_zero_cores_is_refused():
    with pytest.raises(ValueError, match="cores"):
        threads_for(0, 0.0)


def test_measured_choice_stays_within_the_cores_and_says_what_it_saw():
    choice = choose_threads(seconds=0.2)

    assert 1 <= choice.threads <= choice.cores
    assert choice.measured
    assert measure_load(0.1).competing >= 0.0
    assert f"{choice.threads} torch thread" in choice.describe()
    assert f"{choice.cores} cores" in choice.describe()


def test_the_environment_variable_sets_the_count_without_sampling(monkeypatch):
    monkeypatch.setenv(THREADS_ENVIRONMENT, "3")
    monkeypatch.setattr(thread_choice, "measure_load", pytest.fail)

    choice = choose_threads()

    assert choice.threads == 3
    assert not choice.measured
    assert choice.describe() == "3 torch threads (set by CARSDEPO_TORCH_THREADS)"


def test_an_empty_environment_variable_means_unset(monkeypatch):
    monkeypatch.setenv(THREADS_ENVIRONMENT, " ")

    assert choose_threads(seconds=0.05).measured


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_environment_value_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENVIRONMENT, value)

    with pytest.raises(ValueError, match=f"CARSDEPO_TORCH_THREADS='{value}'"):
        choose_threads()


def test_resolved_config_adapts_only_a_count_chosen_from_the_load(monkeypatch):
    chosen = resolve_config(DetectorConfig(backend="torchvision"))
    fixed = resolve_config(DetectorConfig(backend="torchvision", num_threads=3))
    monkeypatch.setenv(THREADS_ENVIRONMENT, "2")
    from_environment = resolve_config(DetectorConfig(backend="torchvision"))

    assert chosen.num_threads >= 1 and chosen.adapt_threads
    assert (fixed.num_threads, fixed.adapt_threads) == (3, False)
    assert (from_environment.num_threads, from_environment.adapt_threads) == (2, False)
    assert resolve_config(chosen) == chosen  # resolving again changes nothing


# --- who counts ---------------------------------------------------------------------------


def test_only_processes_at_a_lower_priority_are_left_aside():
    before = {
        (10, 1.0): ProcessCpu(nice=0, seconds=5.0),  # same priority as ours
        (11, 1.0): ProcessCpu(nice=19, seconds=5.0),  # lower
        (12, 1.0): ProcessCpu(nice=-5, seconds=5.0),  # higher
        (13, 1.0): ProcessCpu(nice=19, seconds=5.0),  # ends before the second table
        (14, 1.0): ProcessCpu(nice=19, seconds=9.0),  # its pid is reused by a new process
    }
    after = {
        (10, 1.0): ProcessCpu(nice=0, seconds=6.0),
        (11, 1.0): ProcessCpu(nice=19, seconds=5.5),
        (12, 1.0): ProcessCpu(nice=-5, seconds=6.0),
        (14, 2.0): ProcessCpu(nice=10, seconds=0.25),  # started in between: all of it counts
        (15, 2.0): ProcessCpu(nice=5, seconds=0.25),
    }

    assert lower_priority_seconds(before, after, nice=0) == pytest.approx(0.5 + 0.25 + 0.25)
    assert lower_priority_seconds(before, after, nice=5) == pytest.approx(0.5 + 0.25)
    assert lower_priority_seconds(before, after, nice=19) == 0.0


def test_processes_whose_counters_cannot_be_read_are_left_out(monkeypatch):
    times = SimpleNamespace(user=1.0, system=0.5)
    listed = [
        SimpleNamespace(pid=101, info={"nice": 19, "cpu_times": times, "create_time": 7.0}),
        SimpleNamespace(pid=102, info={"nice": None, "cpu_times": None, "create_time": None}),
        SimpleNamespace(pid=os.getpid(), info={"nice": 0, "cpu_times": times, "create_time": 1.0}),
    ]
    monkeypatch.setattr(psutil, "process_iter", lambda attrs: iter(listed))

    assert take_snapshot().others == {(101, 7.0): ProcessCpu(19, 1.5)}


@contextlib.contextmanager
def busy_child(*nice: str) -> Iterator[subprocess.Popen]:
    """A process spinning on one core (under ``nice`` when given), killed at the end."""
    child = subprocess.Popen([*nice, sys.executable, "-c", "while True: pass"])
    try:
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@pytest.mark.skipif(os.nice(0) >= 19, reason="this process already runs at the lowest priority")
def test_a_busy_process_at_lower_priority_is_left_aside_one_at_ours_counts():
    with busy_child("nice", "-n", "19") as lower, busy_child() as same:
        time.sleep(0.3)  # both started and spinning
        start = take_snapshot()
        lower_before, same_before = cpu_seconds(lower.pid), cpu_seconds(same.pid)
        time.sleep(1.0)
        lower_used, same_used = cpu_seconds(lower.pid), cpu_seconds(same.pid)
        end = take_snapshot()
    lower_used -= lower_before
    same_used -= same_before
    elapsed = end.taken - start.taken

    def only(pid: int, table: dict) -> dict:
        return {key: cpu for key, cpu in table.items() if key[0] == pid}

    # each child sorted by its own priority, whatever else runs on the machine meanwhile
    assert lower_priority_seconds(only(lower.pid, start.others), only(lower.pid, end.others),
                                  end.nice) == pytest.approx(lower_used, abs=0.05)
    assert lower_priority_seconds(only(same.pid, start.others), only(same.pid, end.others),
                                  end.nice) == 0.0
    load = load_between(start, end)
    assert load.lower_priority * elapsed >= lower_used - 0.1
    assert load.competing * elapsed >= same_used - 0.1


def test_inference_takes_its_thread_count_from_the_load_and_gives_the_old_one_back(
        monkeypatch):
    monkeypatch.setenv(THREADS_ENVIRONMENT, "1")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads_from_load() as choice:
            inside = torch.get_num_threads()
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

    assert (choice.threads, inside, after) == (1, 1, 2)


# --- choosing again during training -------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "recent", "expected"),
    [
        (2, [], 2),  # no check yet
        (2, [2], 2),
        (2, [1], 1),  # a busy neighbour: fewer threads at once
        (2, [2, 1], 1),
        (1, [2], 1),  # one quiet window is not enough to raise
        (1, [1, 2], 1),
        (1, [2, 2], 2),  # two in a row are
        (1, [2, 1], 1),
        (2, [4, 3], 3),  # raised to the smaller of the two
        (4, [4, 3], 3),
    ],
)
def test_the_count_drops_at_once_and_rises_only_when_two_checks_agree(current, recent,
                                                                         expected):
    assert rechecked_threads(current, recent) == expected


def test_recheck_follows_the_load_since_the_last_check(monkeypatch):
    competing = iter([1.0, 0.0, 0.0, 0.0, 1.0])
    monkeypatch.setattr(thread_choice, "usable_cores", lambda: 2)
    monkeypatch.setattr(thread_choice, "load_between",
                        lambda start, end: OtherLoad(next(competing), 0.0))
    recheck = ThreadRecheck(2, period_s=0.0)

    changes = [recheck.check() for _ in range(5)]

    assert [change and change.threads for change in changes] == [1, None, 2, None, 1]
    assert recheck.threads == 1


def test_recheck_waits_for_its_period(monkeypatch):
    monkeypatch.setattr(thread_choice, "load_between", pytest.fail)

    assert ThreadRecheck(2, period_s=3600).check() is None


def test_a_changed_count_is_applied_and_told_in_the_run_log(monkeypatch):
    class DropsToOne:
        def __init__(self, threads: int):
            self.threads = threads

        def check(self) -> ThreadChoice:
            self.threads = 1
            return ThreadChoice(1, 2, 0.9)

    monkeypatch.setattr(backends, "ThreadRecheck", DropsToOne)
    reported: list[TrainProgress] = []
    report = backends._adapting_threads(DetectorConfig(num_threads=2, adapt_threads=True),
                                        reported.append)
    previous = torch.get_num_threads()
    try:
        report(TrainProgress(1, 10, {"total": 1.0}, 0.1, 1.0, 1.0))
        applied = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)

    assert applied == 1
    assert reported[0].note == ("torch threads 2 -> 1 torch thread (2 cores, 0.9 busy with "
                                "other processes), re-checked every 30 s of training")


def test_a_fixed_count_is_not_rechecked():
    on_progress = print

    assert backends._adapting_threads(DetectorConfig(num_threads=2), on_progress) is on_progress
