"""``carsdepo train``: its settings reach training_job's run config, a state folder without a
dataset gets the command that builds one, and the printed outcome says what the gate decided
and why. (A real training through the command runs in test_your_own_photos.py.)"""

from __future__ import annotations

import pytest

from carsdepo_assets.cli import main
from carsdepo_assets.cli.train import (
    TrainingError,
    TrainingOutcome,
    format_outcome,
    parse_overrides,
    training_run_config,
)
from carsdepo_assets.state import StateLayout


def test_set_overrides_and_gate_settings_reach_the_training_run():
    from carsdepo_assets.assets.training import DetectorTrainingConfig
    from carsdepo_assets.resources.mlflow import ModelRegistry

    overrides = parse_overrides(["work_side=0", "rpn_fg_iou_thresh=0.7", "backend=torchvision"])
    run_config = training_run_config("real_cpu_short", "auto", None, overrides,
                                     gate={"min_ap50": 0.0, "tolerance": 1.0},
                                     from_champion=True)

    training = DetectorTrainingConfig(**run_config["ops"]["detector"]["config"])
    config = training.detector_config()
    assert training.start_from_champion
    assert (config.work_side, config.rpn_fg_iou_thresh, config.learn_anchors) == (0, 0.7, True)
    assert config.backend == "torchvision"  # a string value that is not JSON stays a string
    registry = ModelRegistry(**run_config["resources"]["model_registry"]["config"])
    assert (registry.min_ap50, registry.min_none_accuracy, registry.tolerance) == (0.0, 0.7, 1.0)
    assert "resources" not in training_run_config("cpu", "auto", None)
    with pytest.raises(TrainingError, match="KEY=VALUE"):
        parse_overrides(["work_side"])


def test_train_without_a_curated_dataset_names_the_command_that_builds_one(
    carsdepo_home: StateLayout, capsys
):
    assert main(["train"]) == 1

    error = capsys.readouterr().err
    assert f"carsdepo train: there is no curated dataset in {carsdepo_home.root} yet" in error
    assert "`carsdepo tick-sensor annotation_sensor`" in error
    assert not list(carsdepo_home.dagster_home.glob("*"))  # Dagster was never started


def test_a_malformed_setting_is_refused_before_anything_runs(carsdepo_home: StateLayout, capsys):
    assert main(["train", "--set", "iterations"]) == 1
    assert "--set 'iterations': expected KEY=VALUE" in capsys.readouterr().err


def outcome(promoted: bool, champion: bool) -> TrainingOutcome:
    metrics = {"AP50": 0.61, "AP50_lower_bound": 0.42, "AP": 0.3, "AP50_scratch": 0.5,
               "AP50_dent": 0.72, "none_accuracy": 0.9, "none_accuracy_lower_bound": 0.8,
               "ms_per_image": 212.4}
    models = {"challenger": {"version": "3", "metrics": metrics, "details": {"images": 24}}}
    if champion:
        models["champion"] = {"version": "2", "metrics": {**metrics, "AP50": 0.7}}
    return TrainingOutcome(
        run_id="0123abcd", model_name="carsdepo-damage-detector", version="3",
        dataset_version="ab12", detector={"backend": "torchvision", "train_wall_s": 80.5,
                                          "train_images_per_s": 3.1,
                                          "started_from": "ImageNet weights",
                                          "best_val_AP50": 0.64},
        evaluation={"dataset_version": "ab12", "models": models}, promoted=promoted,
        gate_reasons="AP50_lower_bound 0.4200 is below the minimum 0.5000",
        previous_champion="2" if promoted and champion else None)


def test_a_held_back_model_is_printed_with_the_gate_s_reason_and_the_champion_beside_it():
    printed = format_outcome(outcome(promoted=False, champion=True))

    assert "test split (24 photos): AP50 0.610 (lower bound 0.420)" in printed
    assert "'None' accuracy 0.900 (lower bound 0.800), 212 ms/photo" in printed
    assert "champion v2 on the same photos: AP50 0.700" in printed
    assert ("quality gate held carsdepo-damage-detector v3 back (AP50_lower_bound 0.4200 is "
            "below the minimum 0.5000): it stays a challenger") in printed


def test_a_promoted_model_says_which_champion_it_replaced_and_how_to_get_it_back():
    printed = format_outcome(outcome(promoted=True, champion=True))

    assert "carsdepo-damage-detector v3 is the champion, replacing v2 (`carsdepo rollback`" \
        in printed
    first = format_outcome(outcome(promoted=True, champion=False))
    assert first.splitlines()[2].endswith("carsdepo-damage-detector v3 is the champion")
