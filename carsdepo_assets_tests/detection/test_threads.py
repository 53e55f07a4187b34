"""The torch thread-count rule: free cores only, never fewer than one thread."""

from __future__ import annotations

import pytest

from carsdepo_assets.detection.backends import resolve_config
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.threads import busy_elsewhere, choose_threads, threads_for


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
    assert busy_elsewhere(0.1) >= 0.0
    assert f"{choice.threads} torch thread" in choice.describe()
    assert f"{choice.cores} cores" in choice.describe()


def test_resolved_config_carries_a_thread_count_and_keeps_an_explicit_one():
    assert resolve_config(DetectorConfig(backend="torchvision")).num_threads >= 1
    assert resolve_config(DetectorConfig(backend="torchvision", num_threads=3)).num_threads == 3
