"""The demo's retrain budget fits what is left of its ten minutes at this run's pace."""

from __future__ import annotations

import time

import pytest

from carsdepo_assets.cli.demo import (
    AFTER_RETRAIN_FACTOR,
    MIN_RETRAIN_SECONDS,
    RETRAIN_SHARE,
    SWEEP_SHARE,
    TARGET_SECONDS,
    DemoPlan,
    Pace,
    job_settings,
)

PLAN = DemoPlan(images=120, seed=7, train_seconds=190.0)


def pace_after(elapsed_s: float, evaluation_s: float) -> Pace:
    return Pace(started=time.perf_counter() - elapsed_s, evaluation_s=evaluation_s)


def test_on_an_idle_machine_a_retrain_gets_its_share_of_the_first_budget():
    assert pace_after(TARGET_SECONDS - 180, 26).retrain_seconds(PLAN) == round(
        190 * RETRAIN_SHARE)


def test_on_a_busy_machine_the_retrain_gets_what_the_target_leaves_after_the_steps_that_follow():
    elapsed = TARGET_SECONDS - 150  # a busy machine: 150 s left when the retrain starts
    pace = pace_after(elapsed, 40)
    expected = TARGET_SECONDS - elapsed - AFTER_RETRAIN_FACTOR * 40  # 66 s
    assert pace.retrain_seconds(PLAN) == pytest.approx(expected, abs=1.5)
    assert pace.retrain_seconds(PLAN, sweep_first=True) == pytest.approx(
        max(MIN_RETRAIN_SECONDS, expected - 2 * 190 / SWEEP_SHARE), abs=1.5)


def test_a_retrain_never_gets_less_than_its_minimum_even_past_the_target():
    assert pace_after(TARGET_SECONDS + 60, 40).retrain_seconds(PLAN) == MIN_RETRAIN_SECONDS


def test_without_budgets_a_retrain_runs_its_share_of_the_iterations_on_every_machine():
    plan = DemoPlan(images=120, seed=7, train_seconds=0.0)
    budget = pace_after(TARGET_SECONDS + 60, 40).retrain_seconds(plan)
    detector = job_settings(plan, budget)["training_job"]["ops"]["detector"]["config"]
    assert detector["time_budget_s"] == 0.0
    assert detector["iterations"] == round(plan.iterations * RETRAIN_SHARE)
    assert detector["start_from_champion"]


def test_the_first_training_and_the_sweep_take_the_plans_budget_and_a_tenth_of_it():
    settings = job_settings(PLAN)
    assert settings["training_job"]["ops"]["detector"]["config"]["time_budget_s"] == 190.0
    assert "start_from_champion" not in settings["training_job"]["ops"]["detector"]["config"]
    sweep = settings["experimentation_job"]["ops"]["experiment_sweep"]["config"]
    assert sweep["time_budget_s"] == pytest.approx(19.0)
