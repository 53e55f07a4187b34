"""``carsdepo train``: a model from the newest curated dataset, and what came of it.

The run is ``training_job``, the job ``dataset_sensor`` and ``drift_sensor`` start too: the
detector trains on the dataset's train split (val picks the best weights) and is registered as
the challenger; ``evaluation_report`` measures it, and the champion when there is one, on the
test split; the blocking ``quality_gate`` check decides whether ``deployed_model`` makes it the
champion. The command prints the figures and the gate's decision with its reasons.
``train-real`` is the same training on the bundled lensor photos.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from carsdepo_assets.cli.console import figure, say
from carsdepo_assets.detection.bootstrap import LOWER_BOUND
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from dagster import ExecutionResult

    from carsdepo_assets.cli.parser import AddCommand

# "auto": gpu where torch sees CUDA, else real_cpu (the presets for real photos).
PRESET_CHOICES = ("auto", "cpu", "real_cpu", "real_cpu_short", "gpu")
BACKEND_CHOICES = ("auto", "torchvision", "detectron2")


class TrainingError(RuntimeError):
    """Training could not start or did not reach a verdict; the message says why and what to
    do."""


@dataclass(frozen=True)
class TrainingOutcome:
    """What one ``training_job`` run made, for people (``format_outcome``) and reports."""

    run_id: str
    model_name: str
    version: str
    dataset_version: str
    detector: dict[str, Any]  # the detector asset's metadata: backend, config, timings
    evaluation: dict[str, Any]  # evaluation_report's value: models -> version, metrics, details
    promoted: bool
    gate_reasons: str
    previous_champion: str | None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.evaluation["models"]["challenger"]["metrics"]

    @property
    def test_images(self) -> int | None:
        return self.evaluation["models"]["challenger"]["details"].get("images")


def resolve_preset(preset: str) -> str:
    """``auto`` -> ``gpu`` where torch sees CUDA, else ``real_cpu``; any other name as it is."""
    if preset not in PRESET_CHOICES:
        raise TrainingError(f"preset {preset!r}: expected one of {', '.join(PRESET_CHOICES)}")
    if preset != "auto":
        return preset
    import torch

    return "gpu" if torch.cuda.is_available() else "real_cpu"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE as JSON where it parses, else a string) -> config fields."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise TrainingError(f"--set {item!r}: expected KEY=VALUE, e.g. iterations=300")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


def training_run_config(preset: str, backend: str, iterations: int | None,
                        overrides: dict[str, Any] | None = None,
                        gate: dict[str, float] | None = None,
                        from_champion: bool = False) -> dict[str, Any]:
    """``training_job``'s run config: the detector's preset and fields, whether it fine-tunes
    the champion, and the quality gate's settings where given (the model_registry resource's
    defaults otherwise)."""
    detector: dict[str, Any] = {"preset": preset, "backend": backend}
    if from_champion:
        detector["start_from_champion"] = True
    if iterations is not None:
        detector["iterations"] = iterations
    if overrides:
        detector["overrides"] = json.dumps(overrides)
    config: dict[str, Any] = {"ops": {"detector": {"config": detector}}}
    if gate:
        config["resources"] = {"model_registry": {"config": gate}}
    return config


def require_curated_dataset(layout: StateLayout) -> None:
    """A clear error, before Dagster loads, when no dataset was built in ``layout`` yet."""
    if not layout.dataset_pointer.is_file():
        raise TrainingError(
            f"there is no curated dataset in {layout.root} yet: label photos in Label Studio, "
            "then build it with `carsdepo tick-sensor annotation_sensor` (dataset_job)"
        )


def train_on_curated_dataset(
    layout: StateLayout,
    preset: str = "cpu",
    backend: str = "auto",
    iterations: int | None = None,
    overrides: dict[str, Any] | None = None,
    gate: dict[str, float] | None = None,
    from_champion: bool = False,
    started_by: str = "cli",
) -> TrainingOutcome:
    """Run ``training_job`` on the newest curated dataset and collect its outcome; a run that
    fails before the gate's verdict raises TrainingError naming the failed step."""
    require_curated_dataset(layout)
    from carsdepo_assets.cli.runner import (
        failure_summary,
        materialization_metadata,
        run_job,
        stored_asset_value,
    )

    result = run_job("training_job", layout, raise_on_failure=False, started_by=started_by,
                     run_config=training_run_config(resolve_preset(preset), backend, iterations,
                                                    overrides, gate, from_champion))
    detector = materialization_metadata(result, "detector")
    if not detector or not materialization_metadata(result, "evaluation_report"):
        stage = "evaluation" if detector else "a model was made"
        raise TrainingError(f"training_job run {result.run_id} failed before {stage}: "
                            f"{failure_summary(result)}")
    evaluation = stored_asset_value(layout, "evaluation_report")
    model = stored_asset_value(layout, "detector")
    deployed = materialization_metadata(result, "deployed_model")
    previous = deployed.get("previous_champion")
    return TrainingOutcome(
        run_id=result.run_id,
        model_name=model["model_name"],
        version=model["version"],
        dataset_version=evaluation["dataset_version"],
        detector=detector,
        evaluation=evaluation,
        promoted=bool(deployed),
        gate_reasons=gate_description(result),
        previous_champion=None if previous in (None, "none") else str(previous),
    )


def gate_description(result: ExecutionResult) -> str:
    """The quality gate's reasons in a finished run ('' when it did not run)."""
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == "quality_gate":
            return evaluation.description or ""
    return ""


def metric_line(metrics: dict[str, Any]) -> str:
    """The figures a person reads first, lower bounds beside the two the gate judges."""
    return (f"AP50 {figure(metrics.get('AP50'))} (lower bound "
            f"{figure(metrics.get(f'AP50{LOWER_BOUND}'))}), AP {figure(metrics.get('AP'))}, "
            f"scratch AP50 {figure(metrics.get('AP50_scratch'))}, dent AP50 "
            f"{figure(metrics.get('AP50_dent'))}, 'None' accuracy "
            f"{figure(metrics.get('none_accuracy'))} (lower bound "
            f"{figure(metrics.get(f'none_accuracy{LOWER_BOUND}'))})")


def format_outcome(outcome: TrainingOutcome) -> str:
    """The model, its test figures beside the champion's, and the gate's decision."""
    trained = outcome.detector
    model = f"{outcome.model_name} v{outcome.version}"
    lines = [
        f"{model}: {trained.get('backend')} detector trained on dataset "
        f"{outcome.dataset_version} in {trained.get('train_wall_s')} s "
        f"({trained.get('train_images_per_s')} images/s), from {trained.get('started_from')}; "
        f"best validation AP50 {figure(trained.get('best_val_AP50'))}",
        f"test split ({outcome.test_images} photos): {metric_line(outcome.metrics)}, "
        f"{outcome.metrics.get('ms_per_image', 0):.0f} ms/photo",
    ]
    champion = outcome.evaluation["models"].get("champion")
    if champion:
        lines.append(f"champion v{champion['version']} on the same photos: "
                     f"{metric_line(champion['metrics'])}")
    if outcome.promoted:
        replaced = (f", replacing v{outcome.previous_champion} (`carsdepo rollback` gives it "
                    "back)" if outcome.previous_champion else "")
        lines.append(f"quality gate passed ({outcome.gate_reasons}): {model} is the champion"
                     f"{replaced}")
    else:
        lines.append(f"quality gate held {model} back ({outcome.gate_reasons}): it stays a "
                     "challenger (`carsdepo predict --model challenger` tries it); train longer "
                     "(--set iterations=N) or label more photos")
    lines.append(f"the run: training_job {outcome.run_id} (Dagster UI: `make dev`); "
                 "its figures and plots: `carsdepo mlflow-ui`")
    return "\n".join(lines)


GATE_OPTIONS = ("min_ap50", "min_none_accuracy", "tolerance")  # model_registry's fields


def gate_overrides(args: argparse.Namespace) -> dict[str, float]:
    """The quality gate's settings given on the command line."""
    return {name: getattr(args, name) for name in GATE_OPTIONS if getattr(args, name) is not None}


def cmd_train(args: argparse.Namespace, layout: StateLayout) -> int:
    try:
        overrides = parse_overrides(args.set)
        require_curated_dataset(layout)
    except TrainingError as error:
        print(f"carsdepo train: {error}", file=sys.stderr)
        return 1
    from carsdepo_assets.cli.runner import RunFailed
    from carsdepo_assets.detection.config import ConfigError

    say(f"==> Training on the newest curated dataset in {layout.root} (training_job)")
    try:
        outcome = train_on_curated_dataset(layout, args.preset, args.backend, None, overrides,
                                           gate_overrides(args), args.from_champion)
    except (TrainingError, ConfigError, RunFailed) as error:
        print(f"carsdepo train: {error}", file=sys.stderr)
        return 1
    print(format_outcome(outcome))
    return 0


def add_training_options(parser: argparse.ArgumentParser, default_preset: str,
                         preset_help: str) -> None:
    """The options ``train`` and ``train-real`` share."""
    parser.add_argument("--preset", default=default_preset, choices=PRESET_CHOICES,
                        help=preset_help)
    parser.add_argument(
        "--backend", default="auto", choices=BACKEND_CHOICES,
        help="detector backend (default auto: detectron2 when installed, else torchvision)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a detector config field, e.g. --set iterations=300 (repeatable)",
    )


def register(command: AddCommand) -> None:
    train = command(
        "train", cmd_train,
        "Train a model on the newest curated dataset (training_job), evaluate it against the "
        "champion on the test split, and print the figures and the quality gate's decision "
        "(promoted to champion, or held back and why). Exit 1 when training failed.",
    )
    add_training_options(
        train, "cpu",
        "detector preset (default cpu: minutes on 2 cores, made for the synthetic photos; "
        "real_cpu: real photos, about an hour on 2 cores; gpu: real_cpu's design at a GPU's "
        "scale; auto: gpu where CUDA is there, else real_cpu)",
    )
    train.add_argument(
        "--from-champion", action="store_true",
        help="fine-tune the champion (its architecture and weights) instead of training from "
        "ImageNet weights: a retrain on new labels needs far fewer iterations",
    )
    train.add_argument("--min-ap50", type=float,
                       help="quality gate: minimum of test AP50's lower bound (default 0.5)")
    train.add_argument("--min-none-accuracy", type=float,
                       help="quality gate: minimum of the 'None' accuracy's lower bound "
                       "(default 0.7)")
    train.add_argument("--tolerance", type=float,
                       help="quality gate: how far below the champion's AP50 and 'None' "
                       "accuracy the new model may fall (default 0.02)")
