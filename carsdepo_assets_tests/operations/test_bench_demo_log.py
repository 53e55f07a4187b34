"""bench_demo reads every change of a training's torch thread count back from the demo's log."""

from __future__ import annotations

from benchmarks.bench_demo import thread_changes
from carsdepo_assets.detection.threads import ThreadChoice

RUN = "5c5f8e77-3a6e-4199-8a65-13cab7fa0e76"


def _logged(job: str, step: str, message: str) -> str:
    return f"2026-12-07 04:00:00 +0000 - dagster - INFO - {job} - {RUN} - {step} - {message}\n"


def test_bench_demo_finds_each_thread_change_with_its_training_and_iteration():
    lowered = ThreadChoice(threads=1, cores=2, busy_elsewhere=0.6)
    raised = ThreadChoice(threads=2, cores=2, busy_elsewhere=0.1)
    log = "".join([
        _logged("training_job", "detector", "iteration 60/500: loss 1.2, 6.1 images/s"),
        _logged("training_job", "detector", f"iteration 120: {lowered.change_note(2)}"),
        _logged("training_job", "detector", f"iteration 200: {raised.change_note(1)}"),
        _logged("experimentation_job", "experiment_sweep",
                f"iteration 9: {lowered.change_note(2)}"),
    ])
    assert thread_changes(log) == [
        {"job": "training_job", "iteration": 120, "threads": [2, 1]},
        {"job": "training_job", "iteration": 200, "threads": [1, 2]},
        {"job": "experimentation_job", "iteration": 9, "threads": [2, 1]},
    ]


def test_bench_demo_reads_no_thread_change_from_a_log_without_one():
    assert thread_changes(_logged("training_job", "detector", "iteration 1/1: loss 1.7")) == []
