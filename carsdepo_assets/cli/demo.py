"""``carsdepo demo`` (``make demo``): the whole loop on synthetic data and embedded defaults.

Each step runs real Dagster jobs in the local instance (visible afterwards in ``make dev``),
against a real Label Studio and a real MLflow store under CARSDEPO_HOME, and prints what it did.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.cli.console import figure, say, stderr_to_log
from carsdepo_assets.detection.bootstrap import LOWER_BOUND as BOUND
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


DEFAULT_ITERATIONS = 500
# The labelled batch only trains and validates; the test split is a batch of its own.
TRAIN_VAL_ONLY = {"train_fraction": 0.85, "val_fraction": 0.15, "test_fraction": 0.0}
TEST_SEED_OFFSET = 500  # incoming batches use 1000, 2000, 3000


@dataclass(frozen=True)
class DemoPlan:
    images: int  # each incoming batch (the drift calibration is made for 120)
    seed: int
    labelled_images: int = 240
    test_images: int = 120
    iterations: int = DEFAULT_ITERATIONS
    backend: str = "auto"
    gate: dict = field(default_factory=dict)  # model_registry overrides (min_ap50 ...)

    def batch(self, purpose: str) -> str:
        return f"demo-{purpose}-s{self.seed}"


class DemoStopped(RuntimeError):
    """An expected end before the loop's end (the gate held the model back, a service is
    down): ``what`` happened and ``todo``, for one paragraph on the console."""

    def __init__(self, what: str, todo: str):
        super().__init__(what)
        self.what = what
        self.todo = todo


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
                   seed_offset: int, images: int | None = None) -> Path:
    from carsdepo_assets.synth import generate_dataset

    out = synthetic_folder(layout, batch)
    result = generate_dataset(out, n_images=images or plan.images, seed=plan.seed + seed_offset,
                              lighting=lighting)
    say(f"    {result.n_images} photos ({result.n_clean} undamaged, lighting {lighting}) "
        f"in {result.images_dir}")
    return out


@step("Ingesting the batch through Dagster (raw_images)")
def ingest(layout: StateLayout, batch: str, folder: Path) -> None:
    from carsdepo_assets.cli.runner import ingest_batch_through_dagster
    from carsdepo_assets.images.summary import format_summary

    manifest = ingest_batch_through_dagster(folder / "images", batch, layout)
    say("    " + format_summary(manifest).replace("\n", "\n    "))


@step("Starting Label Studio (local, 127.0.0.1)")
def start_label_studio(layout: StateLayout) -> str:
    from carsdepo_assets.labeling import server

    info = server.start(layout)
    state = "already running" if info.already_running else "started"
    say(f"    {state} at {info.url} (log: {info.log_path})")
    return info.url


@step("Importing the batch into Label Studio as tasks (label_studio_tasks)")
def create_tasks(layout: StateLayout, batch: str) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("labeling_job", layout, partition_key=batch)
    metadata = materialization_metadata(result, "label_studio_tasks")
    say(f"    {metadata.get('tasks_created', 0)} tasks created, "
        f"{metadata.get('tasks_existing', 0)} already there; project {metadata.get('project_url')}")


@step("Simulated annotators label the tasks (box jitter, misses, skips)")
def annotate(layout: StateLayout, batch: str, folder: Path) -> None:
    from carsdepo_assets.labeling.simulated import annotate_batch_simulated
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    report = annotate_batch_simulated(LabelStudioResource.from_env(layout), layout, batch, folder)
    say(f"    {report.submitted} annotations submitted ({report.negatives} 'no damage', "
        f"{report.boxes} boxes, {report.missed_boxes} boxes missed), {report.skipped} skipped")


@step("Importing a held-out test batch with verified labels, pinned to the test split")
def import_test_batch(layout: StateLayout, batch: str, folder: Path) -> None:
    from carsdepo_assets.labeling.coco_import import import_coco_batch
    from carsdepo_assets.labeling.simulated import GROUND_TRUTH_FILE
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    report = import_coco_batch(LabelStudioResource.from_env(layout), layout, batch,
                               folder / GROUND_TRUTH_FILE, keep_split="test")
    say(f"    {report.annotations_created} photos labelled from their ground truth "
        f"({report.negatives} 'no damage'), {report.already_annotated} already labelled; "
        "the quality gate is judged on them, never trained on")


@step("Pulling annotations and building the curated dataset (dataset_job)")
def build_dataset(layout: StateLayout) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("dataset_job", layout,
                     run_config={"ops": {"curated_dataset": {"config": TRAIN_VAL_ONLY}}})
    metadata = materialization_metadata(result, "curated_dataset")
    say(f"    dataset {metadata.get('version')}: train {metadata.get('images_train')}, "
        f"val {metadata.get('images_val')}, test {metadata.get('images_test')} images; "
        f"{metadata.get('instances_scratch')} scratches, {metadata.get('instances_dent')} dents, "
        f"negatives share {metadata.get('negatives_share')}")


@step("Training, evaluating and promoting a detector (training_job, tracked in MLflow)")
def train(layout: StateLayout, plan: DemoPlan, log_path: Path) -> None:
    from carsdepo_assets.cli.runner import RunFailed, materialization_metadata, run_job
    from carsdepo_assets.detection.threads import choose_threads

    threads = choose_threads()
    say(f"    {plan.iterations} iterations with {threads.describe()}; "
        f"progress: tail -f {log_path}")
    detector = {"iterations": plan.iterations, "backend": plan.backend,
                "num_threads": threads.threads}
    run_config = {"ops": {"detector": {"config": detector}}}
    if plan.gate:
        run_config["resources"] = {"model_registry": {"config": plan.gate}}
    result = run_job("training_job", layout, raise_on_failure=False, run_config=run_config)
    report = materialization_metadata(result, "evaluation_report")
    if not report:  # training itself failed: nothing to evaluate
        raise RunFailed(f"training_job run {result.run_id} failed before evaluation")
    trained = materialization_metadata(result, "detector")
    say(f"    trained in {trained.get('train_wall_s')}s at {trained.get('train_images_per_s')} "
        f"images/s; best validation AP50 {figure(trained.get('best_val_AP50'))}")
    say(f"    test split ({report.get('test_images')} photos): "
        f"AP50 {figure(report.get('AP50'))} (lower bound {figure(report.get(f'AP50{BOUND}'))}), "
        f"AP {figure(report.get('AP'))}, 'None' accuracy {figure(report.get('none_accuracy'))} "
        f"(lower bound {figure(report.get(f'none_accuracy{BOUND}'))}), "
        f"{report.get('ms_per_image')} ms/image")
    deployed = materialization_metadata(result, "deployed_model")
    if not deployed:
        raise DemoStopped(
            "The quality gate held the new model back, so there is no champion to answer with: "
            f"{_check(result, 'quality_gate')}. (The gate compares one-sided 95% lower bounds "
            "over the test photos with its minimums.)",
            f"Train longer (`carsdepo demo --iterations {2 * plan.iterations}`) or on more "
            "photos (`--labelled-images`), or look at evaluation_report and its worst examples "
            "in the Dagster UI (`make dev`).",
        )
    say(f"    champion: {deployed.get('champion')} "
        f"(previous: {deployed.get('previous_champion')})")


@step("Profiling a batch and deciding what its drift calls for (monitoring_job)")
def monitor(layout: StateLayout, batch: str) -> str:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("monitoring_job", layout, partition_key=batch)
    decision = materialization_metadata(result, "retraining_decision")
    say(f"    batch {batch}: deviation {decision.get('deviation'):.1f}% -> "
        f"{decision.get('action').upper()}")
    return str(decision.get("action"))


@step("Predicting a fresh batch with the champion (prediction_job) and the KPIs (kpi_job)")
def predict(layout: StateLayout, batch: str, shown: int = 6) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job
    from carsdepo_assets.prediction.batch import prediction_path, read_predictions

    run_job("prediction_job", layout, partition_key=batch)
    rows = list(read_predictions(prediction_path(layout, batch)))
    damaged = sum(1 for row in rows if row.get("damage") not in (None, "None"))
    say(f"    {len(rows)} photos answered: {damaged} damaged, {len(rows) - damaged} \"None\"")
    for row in rows[:shown]:
        answer = row.get("damage", row.get("error"))
        if isinstance(answer, list):
            answer = ", ".join(f"{d['label']} {d['score']:.2f}" for d in answer)
        say(f"    {row['sha256'][:12]}…  {answer}")
    kpis = materialization_metadata(run_job("kpi_job", layout), "kpi_report")
    shown_kpis = {key: value for key, value in kpis.items() if isinstance(value, int | float)}
    say("    KPIs: " + ", ".join(f"{key} {value:.3g}" for key, value in shown_kpis.items()))


def _check(result, check_name: str) -> str:
    """The description of a check's evaluation in a finished run ('' when it did not run)."""
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == check_name:
            return evaluation.description or ("passed" if evaluation.passed else "failed")
    return ""


def run_demo(layout: StateLayout, plan: DemoPlan) -> int:
    """The whole loop; 0 when it reached its end, 1 when it stopped (said why on the console;
    Dagster's log, stack traces included, is in ``CARSDEPO_HOME/logs``)."""
    from carsdepo_assets.cli.runner import prepare_dagster_home

    layout = layout.ensure()
    prepare_dagster_home(layout)
    log_path = layout.root / "logs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
    say(f"carsdepo demo: state in {layout.root}; the full log (Dagster's) goes to {log_path}")
    started = time.perf_counter()
    with stderr_to_log(log_path):
        try:
            outcome = _loop(layout, plan, log_path)
        except Exception as error:  # every way the loop can stop becomes one paragraph
            if not isinstance(error, DemoStopped):
                traceback.print_exc()  # into the log
            what, todo = _explain(error, log_path)
            say(f"\nThe demo stopped before the end of the loop.\n{what}\n"
                f"What to do: {todo}\nThe full log, with any stack trace: {log_path}")
            return 1
    label_studio_url, decisions = outcome
    say("\n==> Drift decisions (drift_sensor launches training_job for 'retrain' and "
        "experimentation_job for 'experiment' when the Dagster daemon runs, e.g. `make dev`)")
    for batch_name, action in decisions.items():
        say(f"    {batch_name:<32} {action}")
    say(f"\nDemo finished in {time.perf_counter() - started:.0f}s: a champion was trained, "
        "promoted and answered a batch. Browse runs, assets and checks with `make dev` "
        "(http://127.0.0.1:3000), experiments with `make mlflow-ui` (http://127.0.0.1:5000), "
        f"tasks in Label Studio ({label_studio_url}; `make labelstudio-stop` stops it). "
        f"Full log: {log_path}")
    return 0


def _loop(layout: StateLayout, plan: DemoPlan, log_path: Path) -> tuple[str, dict[str, str]]:
    batch = plan.batch("labelled")
    folder = generate_batch(layout, plan, batch, "normal", 0, plan.labelled_images)
    ingest(layout, batch, folder)
    label_studio_url = start_label_studio(layout)
    create_tasks(layout, batch)
    annotate(layout, batch, folder)
    test_batch = plan.batch("test")
    test_folder = generate_batch(layout, plan, test_batch, "normal", TEST_SEED_OFFSET,
                                 plan.test_images)
    ingest(layout, test_batch, test_folder)
    import_test_batch(layout, test_batch, test_folder)
    build_dataset(layout)
    train(layout, plan, log_path)
    decisions = {}
    for offset, lighting in enumerate(("normal", "dim", "very-dim"), start=1):
        incoming = plan.batch(f"incoming-{lighting}")
        folder = generate_batch(layout, plan, incoming, lighting, 1000 * offset)
        ingest(layout, incoming, folder)
        decisions[incoming] = monitor(layout, incoming)
    predict(layout, incoming)
    return label_studio_url, decisions


def _explain(error: Exception, log_path: Path) -> tuple[str, str]:
    """(what happened, what to do) for the way the loop stopped."""
    from carsdepo_assets.cli.runner import RunFailed
    from carsdepo_assets.labeling.server import ServerError

    if isinstance(error, DemoStopped):
        return error.what, error.todo
    if isinstance(error, ServerError):
        return (f"Label Studio could not be used: {error}",
                "check its log under CARSDEPO_HOME/label-studio, or point LABEL_STUDIO_URL at a "
                "free port (e.g. http://127.0.0.1:8090), then run the demo again.")
    if isinstance(error, RunFailed):
        return (f"A Dagster run failed: {error}",
                "fix what the message names (a service that is down, a full disk...) and run "
                "the demo again; the failed run is also in the Dagster UI (`make dev`).")
    return (f"An unexpected error: {type(error).__name__}: {error}",
            f"this is a bug; please report it with the log {log_path}.")


def cmd_demo(args: argparse.Namespace, layout: StateLayout) -> int:
    gate = {name: value for name, value in (("min_ap50", args.min_ap50),
                                            ("min_none_accuracy", args.min_none_accuracy))
            if value is not None}
    return run_demo(layout, DemoPlan(
        images=args.images, seed=args.seed, labelled_images=args.labelled_images,
        test_images=args.test_images, iterations=args.iterations, backend=args.backend,
        gate=gate,
    ))


def register(command: AddCommand) -> None:
    demo = command("demo", cmd_demo, "Run the whole loop on synthetic data with embedded defaults.")
    demo.add_argument("--images", type=int, default=120,
                      help="photos per incoming batch (default 120)")
    demo.add_argument("--labelled-images", type=int, default=240,
                      help="photos the simulated annotators label for train/val (default 240)")
    demo.add_argument("--test-images", type=int, default=120,
                      help="photos of the held-out test batch the gate judges (default 120)")
    demo.add_argument("--seed", type=int, default=7, help="random seed for the synthetic data")
    demo.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                      help=f"detector training iterations (default {DEFAULT_ITERATIONS})")
    demo.add_argument(
        "--backend", default="auto", choices=["auto", "torchvision", "detectron2"],
        help="detector backend (default auto: detectron2 when installed, else torchvision)",
    )
    demo.add_argument("--min-ap50", type=float,
                      help="quality gate: minimum of test AP50's lower bound (default 0.5)")
    demo.add_argument("--min-none-accuracy", type=float,
                      help="quality gate: minimum of the 'None' accuracy's lower bound "
                      "(default 0.7)")
