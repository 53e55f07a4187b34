"""``carsdepo demo`` (``make demo``): the whole loop on synthetic data and embedded defaults.

Each step runs real Dagster jobs in the local instance (visible afterwards in ``make dev``),
against a real Label Studio and a real MLflow store under CARSDEPO_HOME, and prints what it did.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.cli.console import figure, say
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


@dataclass(frozen=True)
class DemoPlan:
    images: int
    seed: int

    def batch(self, purpose: str) -> str:
        return f"demo-{purpose}-s{self.seed}"


def step(title: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Prints a header before and the elapsed time after a demo step."""

    def wrap(function: Callable[..., object]) -> Callable[..., object]:
        def run(*args, **kwargs):
            say(f"\n==> {title}")
            started = time.perf_counter()
            result = function(*args, **kwargs)
            say(f"    done in {time.perf_counter() - started:.0f}s")
            return result

        return run

    return wrap


def synthetic_folder(layout: StateLayout, batch: str) -> Path:
    return layout.synthetic_folder(batch)


@step("Generating a synthetic batch of car-panel photos")
def generate_batch(layout: StateLayout, plan: DemoPlan, batch: str, lighting: str,
                   seed_offset: int) -> Path:
    from carsdepo_assets.synth import generate_dataset

    out = synthetic_folder(layout, batch)
    result = generate_dataset(out, n_images=plan.images, seed=plan.seed + seed_offset,
                              lighting=lighting)
    say(f"    {result.n_images} photos ({result.n_clean} undamaged, lighting {lighting}) "
        f"in {result.images_dir}")
    return out


@step("Ingesting the batch through Dagster (raw_images)")
def ingest(batch: str, folder: Path) -> None:
    from carsdepo_assets.cli.runner import ingest_batch_through_dagster
    from carsdepo_assets.images.summary import format_summary

    manifest = ingest_batch_through_dagster(folder / "images", batch)
    say("    " + format_summary(manifest).replace("\n", "\n    "))


@step("Starting Label Studio (local, 127.0.0.1)")
def start_label_studio(layout: StateLayout) -> str:
    from carsdepo_assets.labeling import server

    info = server.start(layout)
    state = "already running" if info.already_running else "started"
    say(f"    {state} at {info.url} (log: {info.log_path})")
    return info.url


@step("Importing the batch into Label Studio as tasks (label_studio_tasks)")
def create_tasks(batch: str) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("labeling_job", partition_key=batch)
    metadata = materialization_metadata(result, "label_studio_tasks")
    say(f"    {metadata.get('tasks_created', 0)} tasks created, "
        f"{metadata.get('tasks_existing', 0)} already there; project {metadata.get('project_url')}")


@step("Simulated annotators label the tasks (box jitter, misses, skips)")
def annotate(layout: StateLayout, batch: str, folder: Path) -> None:
    from carsdepo_assets.labeling.simulated import annotate_batch_simulated
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    report = annotate_batch_simulated(LabelStudioResource.from_env(), layout, batch, folder)
    say(f"    {report.submitted} annotations submitted ({report.negatives} 'no damage', "
        f"{report.boxes} boxes, {report.missed_boxes} boxes missed), {report.skipped} skipped")


@step("Pulling annotations and building the curated dataset (dataset_job)")
def build_dataset() -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("dataset_job")
    metadata = materialization_metadata(result, "curated_dataset")
    say(f"    dataset {metadata.get('version')}: train {metadata.get('images_train')}, "
        f"val {metadata.get('images_val')}, test {metadata.get('images_test')} images; "
        f"{metadata.get('instances_scratch')} scratches, {metadata.get('instances_dent')} dents, "
        f"negatives share {metadata.get('negatives_share')}")


@step("Training, evaluating and promoting a detector (training_job, tracked in MLflow)")
def train(iterations: int, backend: str) -> None:
    from carsdepo_assets.cli.runner import RunFailed, materialization_metadata, run_job

    result = run_job("training_job", raise_on_failure=False, run_config={
        "ops": {"detector": {"config": {"iterations": iterations, "backend": backend}}}
    })
    report = materialization_metadata(result, "evaluation_report")
    if not report:  # training itself failed: nothing to evaluate
        raise RunFailed(f"training_job run {result.run_id} failed before evaluation")
    gate = _check(result, "quality_gate")
    deployed = materialization_metadata(result, "deployed_model")
    say(f"    test split: AP50 {figure(report.get('AP50'))}, AP {figure(report.get('AP'))}, "
        f"'None' accuracy {figure(report.get('none_accuracy'))}, "
        f"{report.get('ms_per_image')} ms/image")
    if deployed:
        say(f"    champion: {deployed.get('champion')} "
            f"(previous: {deployed.get('previous_champion')})")
    else:
        say(f"    the quality gate did not pass, the challenger stays a challenger: {gate}")


@step("Profiling a batch and deciding what its drift calls for (monitoring_job)")
def monitor(batch: str) -> str:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("monitoring_job", partition_key=batch)
    decision = materialization_metadata(result, "retraining_decision")
    say(f"    batch {batch}: deviation {decision.get('deviation'):.1f}% -> "
        f"{decision.get('action').upper()}")
    return str(decision.get("action"))


@step("Predicting a fresh batch with the champion (prediction_job) and the KPIs (kpi_job)")
def predict(layout: StateLayout, batch: str, shown: int = 6) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job
    from carsdepo_assets.prediction.batch import prediction_path, read_predictions

    result = run_job("prediction_job", partition_key=batch, raise_on_failure=False)
    if not result.success:
        say("    no prediction: there is no champion yet (the quality gate did not pass)")
        return
    rows = list(read_predictions(prediction_path(layout, batch)))
    damaged = sum(1 for row in rows if row.get("damage") not in (None, "None"))
    say(f"    {len(rows)} photos answered: {damaged} damaged, {len(rows) - damaged} \"None\"")
    for row in rows[:shown]:
        answer = row.get("damage", row.get("error"))
        if isinstance(answer, list):
            answer = ", ".join(f"{d['label']} {d['score']:.2f}" for d in answer)
        say(f"    {row['sha256'][:12]}…  {answer}")
    kpis = materialization_metadata(run_job("kpi_job"), "kpi_report")
    shown_kpis = {key: value for key, value in kpis.items() if isinstance(value, int | float)}
    say("    KPIs: " + ", ".join(f"{key} {value:.3g}" for key, value in shown_kpis.items()))


def _check(result, check_name: str) -> str:
    """The description of a check's evaluation in a finished run ('' when it did not run)."""
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == check_name:
            return evaluation.description or ("passed" if evaluation.passed else "failed")
    return ""


def run_demo(images: int, seed: int, iterations: int, backend: str = "auto") -> int:
    from carsdepo_assets.cli.runner import RunFailed, prepare_dagster_home
    from carsdepo_assets.labeling.server import ServerError

    layout = StateLayout.from_env().ensure()
    prepare_dagster_home(layout)
    plan = DemoPlan(images=images, seed=seed)
    say(f"carsdepo demo: state in {layout.root}")
    started = time.perf_counter()
    try:
        batch = plan.batch("labelled")
        folder = generate_batch(layout, plan, batch, "normal", 0)
        ingest(batch, folder)
        label_studio_url = start_label_studio(layout)
        create_tasks(batch)
        annotate(layout, batch, folder)
        build_dataset()
        train(iterations, backend)
        decisions = {}
        for offset, lighting in enumerate(("normal", "dim", "very-dim"), start=1):
            incoming = plan.batch(f"incoming-{lighting}")
            ingest(incoming, generate_batch(layout, plan, incoming, lighting, 1000 * offset))
            decisions[incoming] = monitor(incoming)
        predict(layout, incoming)
    except (RunFailed, ServerError) as error:
        print(f"\ndemo failed: {error}", file=sys.stderr)
        return 1
    say("\n==> Drift decisions (drift_sensor launches training_job for 'retrain' and "
        "experimentation_job for 'experiment' when the Dagster daemon runs, e.g. `make dev`)")
    for batch_name, action in decisions.items():
        say(f"    {batch_name:<32} {action}")
    say(f"\nDemo finished in {time.perf_counter() - started:.0f}s. "
        "Browse runs, assets and checks with `make dev` (http://127.0.0.1:3000), experiments "
        "with `make mlflow-ui` (http://127.0.0.1:5000), tasks in Label Studio "
        f"({label_studio_url}; `make labelstudio-stop` stops it).")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(
        images=args.images, seed=args.seed, iterations=args.iterations, backend=args.backend
    )


def register(command: AddCommand) -> None:
    demo = command("demo", cmd_demo, "Run the whole loop on synthetic data with embedded defaults.")
    demo.add_argument("--images", type=int, default=120, help="photos per synthetic batch")
    demo.add_argument("--seed", type=int, default=7, help="random seed for the synthetic data")
    demo.add_argument(
        "--iterations", type=int, default=300, help="detector training iterations (default 300)"
    )
    demo.add_argument(
        "--backend", default="auto", choices=["auto", "torchvision", "detectron2"],
        help="detector backend (default auto: detectron2 when installed, else torchvision)",
    )
