"""A training time budget: the learning rate decays over whichever of the iterations and the
budget runs out first, training stops when the budget is spent (validating and keeping the
best weights as at a normal end), and the summary says which of the two ended it."""

from __future__ import annotations

import pytest

from carsdepo_assets.detection.backends import fine_tuning_config, train_detector
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.data import CocoSplit
from carsdepo_assets.detection.training import Schedule
from carsdepo_assets.synth import generate_dataset

LR = 1e-3
FLOOR = LR / 100


def rates(config: DetectorConfig, elapsed_per_iteration: float) -> tuple[list[float], Schedule]:
    """The learning rates of a run whose iterations each take ``elapsed_per_iteration``
    seconds, until the schedule says it is done."""
    schedule, lrs, iteration = Schedule(config), [], 0
    while not schedule.done:
        iteration += 1
        lrs.append(schedule.learning_rate(iteration, (iteration - 1) * elapsed_per_iteration))
    return lrs, schedule


def test_without_a_budget_the_schedule_warms_up_then_decays_to_the_floor_at_the_last_iteration():
    config = DetectorConfig(iterations=100, warmup_iterations=10, lr=LR)
    lrs, schedule = rates(config, elapsed_per_iteration=60.0)  # time means nothing here

    assert len(lrs) == 100 and schedule.stopped_by == "iterations"
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] == pytest.approx(LR)
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert lrs[-1] == pytest.approx(FLOOR)
    midway = 10 + (100 - 10) // 2  # half of the decay done: half of the way down
    assert lrs[midway - 1] == pytest.approx((LR + FLOOR) / 2)


def test_a_budget_spent_before_the_iterations_ends_training_with_the_full_decay():
    config = DetectorConfig(iterations=1000, time_budget_s=50.0, warmup_iterations=10, lr=LR)
    lrs, schedule = rates(config, elapsed_per_iteration=1.0)

    assert schedule.stopped_by == "time budget"
    assert len(lrs) == 51  # the iteration that starts with the budget spent is the last
    assert lrs[9] == pytest.approx(LR)
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert lrs[-1] == pytest.approx(FLOOR)


def test_a_slower_machine_runs_the_same_decay_over_fewer_iterations():
    config = DetectorConfig(iterations=1000, time_budget_s=100.0, warmup_iterations=1, lr=LR)
    fast, _ = rates(config, elapsed_per_iteration=0.5)
    slow, _ = rates(config, elapsed_per_iteration=1.0)

    assert len(fast) == 201 and len(slow) == 101
    assert fast[100] == pytest.approx(slow[50], rel=0.01)  # halfway through the budget, both
    assert fast[-1] == slow[-1] == pytest.approx(FLOOR)


def test_iterations_still_end_a_run_that_the_budget_would_let_go_on():
    config = DetectorConfig(iterations=20, time_budget_s=3600.0, warmup_iterations=5, lr=LR)
    lrs, schedule = rates(config, elapsed_per_iteration=1.0)

    assert len(lrs) == 20 and schedule.stopped_by == "iterations"
    assert lrs[-1] == pytest.approx(FLOOR)


def test_a_negative_budget_is_refused_and_zero_means_no_budget():
    with pytest.raises(ConfigError, match="time_budget_s=-1"):
        DetectorConfig(time_budget_s=-1)
    lrs, schedule = rates(DetectorConfig(iterations=7, time_budget_s=0.0, warmup_iterations=2),
                          elapsed_per_iteration=1e6)
    assert len(lrs) == 7 and schedule.stopped_by == "iterations"


def test_a_fine_tuning_run_keeps_its_own_budget():
    start = DetectorConfig(iterations=500, time_budget_s=190)
    tuned = fine_tuning_config(DetectorConfig(iterations=200, time_budget_s=85), start)

    assert (tuned.iterations, tuned.time_budget_s) == (200, 85)


@pytest.mark.slow  # trains a tiny detector on the CPU
def test_real_training_stops_when_its_budget_is_spent_and_keeps_the_validated_weights(
    tmp_path,
):
    out = tmp_path / "panels"
    generate_dataset(out, n_images=6, seed=5, width=224, height=160)
    panels = CocoSplit.from_folder(out)
    reports = []
    # 10,000 iterations would take hours; two seconds of budget stop it after a handful
    config = DetectorConfig(backend="torchvision", min_size=160, max_size=224, batch_size=2,
                            num_threads=1, iterations=10_000, eval_period=10_000,
                            warmup_iterations=1, time_budget_s=2.0)

    detector = train_detector(panels, panels, config, tmp_path / "work", reports.append)

    summary = detector.summary
    assert summary.stopped_by == "time budget"
    assert 1 <= summary.iterations < 10_000 and reports[-1].iteration == summary.iterations
    assert summary.images_seen == 2 * summary.iterations
    # the run that ends on its budget is validated at its end, as one that ends on iterations
    assert [h["iteration"] for h in summary.val_history] == [summary.iterations]
    assert reports[-1].val_metrics is not None
    assert reports[-1].lr == pytest.approx(config.lr / 100)  # the decay ran to its end
