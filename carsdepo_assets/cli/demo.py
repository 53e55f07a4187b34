"""``carsdepo demo`` (``make demo``): the whole loop on synthetic data and embedded defaults.

The loop runs as it would in production: photos are dropped into ``landing/`` and the sensors
start the runs (``landing_zone_sensor`` ingests, ``annotation_sensor`` builds the dataset,
``dataset_sensor`` trains the first model, ``drift_sensor`` retrains or experiments), each tick
recorded in the local Dagster instance (``cli.sensor_ticks``); the demo starts only what no
sensor starts (Label Studio tasks, monitoring, predictions) and plays the annotators, who review
the champion's pre-annotations once there is one. Every run is a run of the workspace's jobs,
tagged ``carsdepo/started_by`` (demo or sensor), against a real Label Studio and a real MLflow
store under CARSDEPO_HOME; ``make dev`` shows them afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.cli.console import figure, say, stderr_to_log
from carsdepo_assets.detection.bootstrap import LOWER_BOUND as BOUND
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


DEFAULT_ITERATIONS = 500  # a cap: the time budget below ends the first training sooner
# The first training's time budget (validation included): the loop fits in about ten minutes
# on two idle cores, and a slower or busier machine trains fewer iterations rather than
# running over. `--train-seconds 0` trains the full iterations, the same run on every machine.
DEFAULT_TRAIN_SECONDS = 190.0
TEST_SEED_OFFSET = 500  # incoming batches use 1000, 2000, 3000
LIGHTINGS = ("normal", "dim", "very-dim")
REVIEWED_LIGHTING = "dim"  # the batch the annotators review after the champion pre-annotated it
# A retrain fine-tunes the champion for this share of the first training's budget (and
# iterations). 0.65 was tried (training guide, "A longer retrain"): no better on five idle
# seeds, and about 50 s longer
RETRAIN_SHARE = 0.45
SWEEP_SHARE = 10  # the demo's capped sweep: one configuration, iterations and budget / 10
# A retrain's budget also fits what is left of the demo's ten minutes (less a margin) after
# the steps that follow it, so a busy machine trains the retrain for less rather than running
# over. Those steps are reckoned from this run's own pace: the retrain's evaluation, gate and
# registration plus the predictions and KPIs took 2.1 times what the first training's did
# (evaluation, gate, registration, drift reference) on two idle cores, about 1.9 times beside
# a busy process; a sweep in the same sensor tick takes about twice its budget.
TARGET_SECONDS = 585.0
AFTER_RETRAIN_FACTOR = 2.1
SWEEP_COST_FACTOR = 2.0
MIN_RETRAIN_SECONDS = 30.0
LANDING_POLL_S = 2.0


@dataclass(frozen=True)
class DemoPlan:
    images: int  # each incoming batch (the drift calibration is made for 120)
    seed: int
    labelled_images: int = 240
    test_images: int = 120
    iterations: int = DEFAULT_ITERATIONS
    train_seconds: float = DEFAULT_TRAIN_SECONDS  # 0: no time budget
    backend: str = "auto"
    gate: dict = field(default_factory=dict)  # model_registry overrides (min_ap50 ...)

    def batch(self, purpose: str) -> str:
        return f"demo-{purpose}-s{self.seed}"


@dataclass
class Pace:
    """When the loop started and how long this run's first training took beyond its
    training (evaluation, gate, registration): what a retrain's budget is fitted by."""

    started: float = field(default_factory=time.perf_counter)
    evaluation_s: float = 0.0

    def retrain_seconds(self, plan: DemoPlan, sweep_first: bool = False) -> float:
        """A retrain's time budget: ``RETRAIN_SHARE`` of the first training's, or what the
        demo's ``TARGET_SECONDS`` leave after the steps that follow (never below
        ``MIN_RETRAIN_SECONDS``); 0 (none) when the demo trains without budgets."""
        if not plan.train_seconds:
            return 0.0
        after = AFTER_RETRAIN_FACTOR * self.evaluation_s
        if sweep_first:
            after += SWEEP_COST_FACTOR * plan.train_seconds / SWEEP_SHARE
        left = TARGET_SECONDS - (time.perf_counter() - self.started) - after
        return float(round(max(MIN_RETRAIN_SECONDS,
                               min(plan.train_seconds * RETRAIN_SHARE, left))))


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


@step("Dropping the photos into landing/; landing_zone_sensor ingests them (ingest_job)")
def land(layout: StateLayout, folders: dict[str, Path]) -> None:
    from carsdepo_assets.cli.sensor_ticks import tick_sensor
    from carsdepo_assets.images.ingest import load_manifest
    from carsdepo_assets.images.landing import READY_MARKER
    from carsdepo_assets.images.summary import format_summary

    for batch, folder in folders.items():
        shutil.copytree(folder / "images", layout.landing_folder(batch))
        (layout.landing_folder(batch) / READY_MARKER).touch()  # done: no quiet period to wait
    waiting = set(folders)
    while waiting:
        outcome = tick_sensor("landing_zone_sensor", layout)
        if outcome.stopped:
            raise DemoStopped("landing_zone_sensor is switched off in the Dagster UI, so the "
                              "dropped photos were not ingested.",
                              "switch it on (Automation page of `make dev`) and run the demo "
                              "again.")
        for job_name, result in outcome.runs:
            batch = result.dagster_run.tags.get("dagster/partition")
            waiting.discard(batch)
            _require(result, job_name)
            say(f"    sensor tick {outcome.tick_id}: {job_name} run {result.run_id[:8]} for "
                f"{batch}\n    " + format_summary(load_manifest(layout, batch)).replace(
                    "\n", "\n    "))
        if waiting:
            time.sleep(LANDING_POLL_S)  # the landing zone's quiet period, as in production


def start_label_studio(layout: StateLayout) -> Future:
    """Start Label Studio in a thread: its first start (database migrations, most of a minute)
    overlaps with generating and ingesting the first photos."""
    from carsdepo_assets.labeling import server

    say("\n==> Starting Label Studio (local, 127.0.0.1) while the first photos are made")
    starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-studio-start")
    started = starter.submit(server.start, layout)
    starter.shutdown(wait=False)
    return started


@step("Waiting for Label Studio to answer")
def label_studio_ready(started: Future) -> str:
    info = started.result()  # a ServerError raised while starting is raised here
    state = "already running" if info.already_running else "started"
    say(f"    {state} at {info.url} (log: {info.log_path})")
    return info.url


@step("Importing the batch into Label Studio as tasks (label_studio_tasks)")
def create_tasks(layout: StateLayout, batch: str) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("labeling_job", layout, partition_key=batch, started_by="demo")
    metadata = materialization_metadata(result, "label_studio_tasks")
    say(f"    {metadata.get('tasks_created', 0)} tasks created, "
        f"{metadata.get('tasks_existing', 0)} already there; project {metadata.get('project_url')}")
    if metadata.get("pre_annotations_added"):
        say(f"    {metadata['pre_annotations_added']} pre-annotations of "
            f"{metadata.get('pre_annotations')}, least confident served first")


@step("Simulated annotators label the tasks, or review their pre-annotations")
def annotate(layout: StateLayout, batch: str, folder: Path) -> None:
    from carsdepo_assets.labeling.simulated import annotate_batch_simulated
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    report = annotate_batch_simulated(LabelStudioResource.from_env(layout), layout, batch, folder)
    say(f"    {report.submitted} annotations submitted ({report.reviewed} reviewed from "
        f"pre-annotations; {report.negatives} 'no damage', {report.boxes} boxes), "
        f"{report.skipped} skipped")


@step("Importing a held-out test batch with verified labels, pinned to the test split")
def import_test_batch(layout: StateLayout, batch: str, folder: Path) -> None:
    from carsdepo_assets.labeling.coco_import import import_coco_batch
    from carsdepo_assets.labeling.simulated import GROUND_TRUTH_FILE
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    verified = LabelStudioResource.from_env(layout).for_split("test")
    report = import_coco_batch(verified, layout, batch, folder / GROUND_TRUTH_FILE,
                               keep_split="test")
    say(f"    {report.annotations_created} photos labelled from their ground truth "
        f"({report.negatives} 'no damage'), {report.already_annotated} already labelled; "
        "the quality gate is judged on them, never trained on; they sit in a Label Studio "
        "project of their own, away from the annotators' work")


@step("annotation_sensor: new annotations in Label Studio -> dataset_job")
def build_dataset(layout: StateLayout) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata

    ((_, result),) = sensor_runs(layout, "annotation_sensor", expected=1)
    review = materialization_metadata(result, "annotations")
    metadata = materialization_metadata(result, "curated_dataset")
    say(f"    dataset {metadata.get('version')}: train {metadata.get('images_train')}, "
        f"val {metadata.get('images_val')}, test {metadata.get('images_test')} images (the "
        f"verified batch); {metadata.get('instances_scratch')} scratches, "
        f"{metadata.get('instances_dent')} dents, negatives share "
        f"{metadata.get('negatives_share')}")
    if review.get("prelabel_images"):
        say(f"    pre-annotations reviewed on {review['prelabel_images']} photos: "
            f"{review['prelabel_accepted']} boxes accepted unchanged, "
            f"{review['prelabel_adjusted']} adjusted, {review['prelabel_deleted']} deleted, "
            f"{review['prelabel_drawn']} drawn ({review['prelabel_accepted_share']:.0%} of the "
            "final boxes needed no drawing)")


def sensor_runs(layout: StateLayout, sensor: str, expected: int,
                run_config: dict | None = None) -> list:
    """Tick ``sensor`` once and return the runs it started (job name, result), printing the
    tick; fewer runs than ``expected`` stop the demo with the sensor's reason."""
    from carsdepo_assets.cli.sensor_ticks import tick_sensor

    outcome = tick_sensor(sensor, layout, run_config=run_config)
    if not outcome.runs:
        say(f"    sensor tick {outcome.tick_id}: skipped, {outcome.skip_reason}")
    if len(outcome.runs) < expected:
        raise DemoStopped(f"{sensor} started {len(outcome.runs)} runs where the loop needs "
                          f"{expected}: {outcome.skip_reason}.",
                          "switch the sensor on in the Dagster UI (`make dev`) if it is off, "
                          "or look at its ticks there.")
    for job_name, result in outcome.runs:
        tags = result.dagster_run.tags
        why = ", ".join(f"{key.split('/')[-1]} {value}" for key, value in tags.items()
                        if key in ("carsdepo/decision", "carsdepo/drifted_batch",
                                   "carsdepo/new_labels", "carsdepo/changed_annotations"))
        say(f"    sensor tick {outcome.tick_id}: {job_name} run {result.run_id[:8]}"
            + (f" ({why})" if why else ""))
    return outcome.runs


def _require(result, job_name: str) -> None:
    from carsdepo_assets.cli.runner import RunFailed, failure_summary

    if not result.success:
        raise RunFailed(f"{job_name} run {result.run_id}: {failure_summary(result)}")


def job_settings(plan: DemoPlan, retrain_seconds: float | None = None) -> dict[str, dict]:
    """Run config for the runs the sensors start: the demo's training length (iterations and
    time budget) and backend, its gate, and a capped sweep (one configuration, a tenth of the
    budget) to keep the demo within minutes. With ``retrain_seconds`` a training fine-tunes
    the champion for a share of the iterations, within that budget (``Pace``)."""
    retrain = retrain_seconds is not None
    share = RETRAIN_SHARE if retrain else 1.0
    detector = {"iterations": max(1, round(plan.iterations * share)),
                "time_budget_s": retrain_seconds if retrain else plan.train_seconds,
                "backend": plan.backend}
    if retrain:
        detector["start_from_champion"] = True
    training = {"ops": {"detector": {"config": detector}}}
    if plan.gate:
        training["resources"] = {"model_registry": {"config": plan.gate}}
    sweep = {"max_runs": 1, "iterations": max(1, plan.iterations // SWEEP_SHARE),
             "time_budget_s": plan.train_seconds / SWEEP_SHARE}
    return {"training_job": training,
            "experimentation_job": {"ops": {"experiment_sweep": {"config": sweep}}}}


@step("dataset_sensor: enough new labels -> training_job (train, evaluate, gate; MLflow)")
def train_first(layout: StateLayout, plan: DemoPlan, pace: Pace, log_path: Path) -> str:
    from carsdepo_assets.cli.runner import materialization_metadata
    from carsdepo_assets.detection.threads import choose_threads

    budget = (f"up to {plan.iterations} iterations within {plan.train_seconds:.0f} s"
              if plan.train_seconds else f"{plan.iterations} iterations")
    say(f"    {budget}, starting with {choose_threads().describe()} "
        f"(re-checked while training); progress: tail -f {log_path}")
    started = time.perf_counter()
    ((_, result),) = sensor_runs(layout, "dataset_sensor", 1, job_settings(plan))
    trained = materialization_metadata(result, "detector")
    pace.evaluation_s = time.perf_counter() - started - float(trained.get("train_wall_s", 0.0))
    champion = training_outcome(result)
    if champion is None:
        raise DemoStopped(
            "The quality gate held the new model back, so there is no champion to answer with: "
            f"{_check(result, 'quality_gate')}. (The gate compares one-sided 95% lower bounds "
            "over the test photos with its minimums.)",
            f"Train longer (`carsdepo demo --iterations {2 * plan.iterations}"
            + (f" --train-seconds {2 * plan.train_seconds:.0f}" if plan.train_seconds else "")
            + "`) or on more photos (`--labelled-images`), or look at evaluation_report and its "
            "worst examples in the Dagster UI (`make dev`).",
        )
    return champion


def training_outcome(result) -> str | None:
    """Print a training_job run's figures; the champion it made, or None when it was held
    back (the reason printed)."""
    from carsdepo_assets.cli.runner import RunFailed, materialization_metadata

    report = materialization_metadata(result, "evaluation_report")
    if not report:  # training itself failed: nothing to evaluate
        raise RunFailed(f"training_job run {result.run_id} failed before evaluation")
    trained = materialization_metadata(result, "detector")
    stopped = (" (its time budget)" if trained.get("train_stopped_by") == "time budget"
               else "")
    say(f"    {trained.get('model')}, from {trained.get('started_from')}: "
        f"{trained.get('train_iterations')} iterations{stopped} in "
        f"{trained.get('train_wall_s')}s at "
        f"{trained.get('train_images_per_s')} images/s; best validation AP50 "
        f"{figure(trained.get('best_val_AP50'))}")
    say(f"    test split ({report.get('test_images')} photos): "
        f"AP50 {figure(report.get('AP50'))} (lower bound {figure(report.get(f'AP50{BOUND}'))}), "
        f"AP {figure(report.get('AP'))}, 'None' accuracy {figure(report.get('none_accuracy'))} "
        f"(lower bound {figure(report.get(f'none_accuracy{BOUND}'))}), "
        f"{report.get('ms_per_image')} ms/image")
    deployed = materialization_metadata(result, "deployed_model")
    if not deployed:
        say(f"    held back by the quality gate: {_check(result, 'quality_gate')}")
        return None
    say(f"    champion: {deployed.get('champion')} "
        f"(previous: {deployed.get('previous_champion')})")
    return str(deployed.get("champion"))


@step("Profiling a batch and deciding what its drift calls for (monitoring_job)")
def monitor(layout: StateLayout, batch: str) -> str:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job

    result = run_job("monitoring_job", layout, partition_key=batch, started_by="demo")
    decision = materialization_metadata(result, "retraining_decision")
    say(f"    batch {batch}: deviation {decision.get('deviation'):.1f}% -> "
        f"{decision.get('action').upper()}; signals moved: "
        f"{decision.get('moved_signals') or 'none'}")
    return str(decision.get("action"))


@step("Predicting a fresh batch with the champion (prediction_job) and the KPIs (kpi_job)")
def predict(layout: StateLayout, batch: str, shown: int = 6) -> None:
    from carsdepo_assets.cli.runner import materialization_metadata, run_job
    from carsdepo_assets.prediction.batch import prediction_path, read_predictions

    run_job("prediction_job", layout, partition_key=batch, started_by="demo")
    rows = list(read_predictions(prediction_path(layout, batch)))
    damaged = sum(1 for row in rows if row.get("damage") not in (None, "None"))
    say(f"    {len(rows)} photos answered: {damaged} damaged, {len(rows) - damaged} \"None\"")
    for row in rows[:shown]:
        answer = row.get("damage", row.get("error"))
        if isinstance(answer, list):
            answer = ", ".join(f"{d['label']} {d['score']:.2f}" for d in answer)
        say(f"    {row['sha256'][:12]}…  {answer}")
    kpis = materialization_metadata(run_job("kpi_job", layout, started_by="demo"), "kpi_report")
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
    say("\n==> Drift decisions and what drift_sensor started")
    for batch_name, action in outcome.decisions.items():
        say(f"    {batch_name:<32} {action}")
    for line in outcome.acted:
        say(f"    {line}")
    history = " -> ".join(outcome.champions)
    say(f"\nDemo finished in {time.perf_counter() - started:.0f}s: champions {history}; a "
        "champion answered a batch. What it did, in the UIs:\n"
        "    runs, sensor ticks, assets, checks: `make dev`, http://127.0.0.1:3000\n"
        "    the model history: `make mlflow-ui`, "
        "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning\n"
        f"    tasks and pre-annotations: Label Studio, {outcome.label_studio_url} (log in as "
        f"{server_login()}; `make labelstudio-stop` stops it)\n"
        f"Full log: {log_path}")
    return 0


@dataclass
class LoopOutcome:
    label_studio_url: str
    champions: list[str]  # in the order they were promoted
    decisions: dict[str, str]  # batch -> drift decision
    acted: list[str]  # what drift_sensor started, one line each


def server_login() -> str:
    """The Label Studio login to print: the public local default as it is, a password the user
    set by its variable's name only."""
    from carsdepo_assets.labeling.server import DEFAULT_PASSWORD, ServerSettings

    settings = ServerSettings.from_env()
    password = (settings.password if settings.password == DEFAULT_PASSWORD
                else "$LABEL_STUDIO_PASSWORD")
    return f"{settings.username} / {password}"


def _loop(layout: StateLayout, plan: DemoPlan, log_path: Path) -> LoopOutcome:
    pace = Pace()
    label_studio = start_label_studio(layout)
    labelled, test = plan.batch("labelled"), plan.batch("test")
    folders = {
        labelled: generate_batch(layout, plan, labelled, "normal", 0, plan.labelled_images),
        test: generate_batch(layout, plan, test, "normal", TEST_SEED_OFFSET, plan.test_images),
    }
    land(layout, folders)
    label_studio_url = label_studio_ready(label_studio)
    create_tasks(layout, labelled)
    annotate(layout, labelled, folders[labelled])
    import_test_batch(layout, test, folders[test])
    build_dataset(layout)
    champions = [train_first(layout, plan, pace, log_path)]
    incoming = {plan.batch(f"incoming-{lighting}"):
                generate_batch(layout, plan, plan.batch(f"incoming-{lighting}"), lighting,
                               1000 * offset)
                for offset, lighting in enumerate(LIGHTINGS, start=1)}
    land(layout, incoming)
    decisions = {batch: monitor(layout, batch) for batch in incoming}
    reviewed = plan.batch(f"incoming-{REVIEWED_LIGHTING}")
    create_tasks(layout, reviewed)
    annotate(layout, reviewed, incoming[reviewed])
    build_dataset(layout)
    acted = act_on_drift(layout, plan, pace, champions,
                         sweep_first="experiment" in decisions.values())
    acted += train_on_new_labels(layout, plan, pace, champions)
    predict(layout, list(incoming)[-1])
    return LoopOutcome(label_studio_url, champions, decisions, acted)


@step("dataset_sensor: the reviewed labels -> training_job, unless a retrain took them already")
def train_on_new_labels(layout: StateLayout, plan: DemoPlan, pace: Pace,
                        champions: list[str]) -> list[str]:
    """The annotation -> dataset -> training path for the reviewed batch."""
    budget = pace.retrain_seconds(plan)
    return [f"new labels -> training_job run {result.run_id[:8]}: "
            + challenger_outcome(result, champions, plan, budget)
            for _, result in sensor_runs(layout, "dataset_sensor", 0, job_settings(plan, budget))]


def challenger_outcome(result, champions: list[str], plan: DemoPlan, budget: float) -> str:
    """Print a retraining's figures (and its budget when ``Pace`` cut it); a challenger the
    gate promoted joins ``champions``."""
    if budget and budget < plan.train_seconds * RETRAIN_SHARE:
        say(f"    its time budget: {budget:.0f} s, not {plan.train_seconds * RETRAIN_SHARE:.0f} "
            f"s: what the demo's {TARGET_SECONDS:.0f} s left at this machine's pace")
    champion = training_outcome(result)
    if champion is None:
        return "held back by the gate"
    champions.append(champion)
    return f"{champion} promoted"


@step("drift_sensor: 'retrain' -> training_job (v2: the champion fine-tuned on the new labels), "
      "'experiment' -> experimentation_job")
def act_on_drift(layout: StateLayout, plan: DemoPlan, pace: Pace, champions: list[str],
                 sweep_first: bool) -> list[str]:
    """Let drift_sensor act on the decisions; a v2 promoted by the gate joins ``champions``.
    ``sweep_first``: an 'experiment' decision's sweep may run before the retrain."""
    from carsdepo_assets.cli.runner import materialization_metadata

    acted = []
    budget = pace.retrain_seconds(plan, sweep_first)
    for job_name, result in sensor_runs(layout, "drift_sensor", 0, job_settings(plan, budget)):
        tags = result.dagster_run.tags
        batches = tags.get("carsdepo/drifted_batches") or tags.get("carsdepo/drifted_batch")
        started = (f"{batches}: {tags.get('carsdepo/decision')} -> {job_name} run "
                   f"{result.run_id[:8]}")
        if job_name == "training_job":
            acted.append(f"{started}: {challenger_outcome(result, champions, plan, budget)}")
        else:
            _require(result, job_name)
            sweep = materialization_metadata(result, "experiment_sweep")
            say(f"    sweep in MLflow experiment {sweep.get('experiment')}: best val AP50 "
                f"{figure(sweep.get('best_val_AP50'))} (never promoted)")
            acted.append(started)
    return acted


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
        test_images=args.test_images, iterations=args.iterations,
        train_seconds=args.train_seconds, backend=args.backend,
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
                      help="most iterations of the first training; a retrain on new labels "
                      f"takes {RETRAIN_SHARE:.0%}% of them (default {DEFAULT_ITERATIONS})")
    demo.add_argument("--train-seconds", type=float, default=DEFAULT_TRAIN_SECONDS,
                      help="time budget of the first training, validation included; a "
                      f"retrain takes {RETRAIN_SHARE:.0%}% of it, or less where the demo would "
                      f"otherwise run past {TARGET_SECONDS:.0f} s; 0: no budget, the full "
                      "iterations, the same run on every machine (default "
                      f"{DEFAULT_TRAIN_SECONDS:.0f})")
    demo.add_argument(
        "--backend", default="auto", choices=["auto", "torchvision", "detectron2"],
        help="detector backend (default auto: detectron2 when installed, else torchvision)",
    )
    demo.add_argument("--min-ap50", type=float,
                      help="quality gate: minimum of test AP50's lower bound (default 0.5)")
    demo.add_argument("--min-none-accuracy", type=float,
                      help="quality gate: minimum of the 'None' accuracy's lower bound "
                      "(default 0.7)")
