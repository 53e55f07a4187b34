"""``carsdepo check``: every asset check against a freshly built demo state (CI runs it).

In a temporary CARSDEPO_HOME, with its own Dagster instance and MLflow store, it builds the
smallest state in which every check has something real to look at, then launches
``checks_job`` (every asset check of the code location) over it and prints one row per check.
The exit code is 1 when any ERROR-severity check failed or a check could not run at all; WARN
failures are shown but do not fail the command.

The state, built with the code location's own assets and jobs:

1. a synthetic batch of photos, ingested by ``ingest_job`` (``raw_images``);
2. annotations from the demo's simulated annotators (``labeling.simulated``) working off the
   synthetic ground truth, written as the annotation snapshot ``annotations`` would pull from
   Label Studio. Assets that need the Label Studio server are not materialized; their checks
   still run, against that snapshot;
3. every other asset a check looks at, and their upstream assets, in one run for the batch:
   ``curated_dataset``, a detector trained for a few iterations (registered in MLflow),
   ``evaluation_report``, ``deployed_model``, the monitoring assets... A new asset with checks
   joins this run by itself. The quality gate's minimums are lowered through run config:
   a model trained for seconds proves the plumbing, not the accuracy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.cli.console import say
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand
    from carsdepo_assets.resources.state import CarsdepoHome

CHECKS_JOB = "checks_job"
LABEL_STUDIO_RESOURCE = "label_studio"
PARTITION_TAG = "dagster/partition"
# Dagster's console logger prints every step event at DEBUG; a CI log wants warnings only.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"
# A model trained for seconds proves the plumbing, not accuracy: the quality gate only asks that
# the metrics exist. Used by the build run (where the gate blocks promotion) and the checks run.
LENIENT_GATE = {"model_registry": {"config": {"min_ap50": 0.0, "min_none_accuracy": 0.0}}}


@dataclass(frozen=True)
class CheckPlan:
    """How big the demo state is: small enough for a CI run on two cores."""

    images: int = 40
    seed: int = 11
    width: int = 256
    height: int = 192
    iterations: int = 6
    batch: str = "check-batch"

    def ingest_run_config(self, source_dir: Path) -> dict:
        return {**QUIET_LOGS, "ops": {"raw_images": {"config": {"source_dir": str(source_dir)}}}}

    def build_run_config(self) -> dict:
        """Train briefly; gate on "the metrics exist"."""
        detector = {
            "iterations": self.iterations,
            "batch_size": 2,
            "min_size": self.height,
            "max_size": self.width,
            "log_every": max(1, self.iterations // 3),
        }
        return {**QUIET_LOGS, "ops": {"detector": {"config": detector}},
                "resources": LENIENT_GATE}

    def checks_run_config(self) -> dict:
        return {**QUIET_LOGS, "resources": LENIENT_GATE}


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result in the checks run."""

    asset: str
    check: str
    partition: str | None
    status: str  # passed | failed | not run
    severity: str  # ERROR | WARN ("-" when the check did not run)
    description: str = ""

    @property
    def fails_ci(self) -> bool:
        return self.status == NOT_RUN or (self.status == FAILED and self.severity == "ERROR")


@dataclass
class CheckReport:
    home: Path
    outcomes: list[CheckOutcome] = field(default_factory=list)
    build_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.build_errors and not any(o.fails_ci for o in self.outcomes)

    def table(self) -> str:
        """A plain-text table for a terminal or a CI log."""
        header = ("asset", "check", "partition", "severity", "result", "details")
        rows = [
            (o.asset, o.check, o.partition or "-", o.severity, o.status.upper(),
             _one_line(o.description))
            for o in sorted(self.outcomes, key=lambda o: (o.asset, o.check))
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True))
                 + "  " + row[5] for row in [header, *rows]]
        lines.insert(1, "-" * min(100, len(lines[0])))
        return "\n".join(line.rstrip() for line in lines)

    def summary(self) -> str:
        counts = {status: sum(o.status == status for o in self.outcomes)
                  for status in (PASSED, FAILED, NOT_RUN)}
        ci = sum(o.fails_ci for o in self.outcomes)
        verdict = "OK" if self.ok else "FAILED"
        text = (f"{verdict}: {len(self.outcomes)} checks, {counts[PASSED]} passed, "
                f"{counts[FAILED]} failed ({ci} failing CI: ERROR severity or not run), "
                f"in {self.seconds:.0f}s")
        return "\n".join([text, *(f"build error: {error}" for error in self.build_errors)])

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "home": str(self.home),
            "seconds": round(self.seconds, 1),
            "build_errors": self.build_errors,
            "checks": [asdict(o) for o in self.outcomes],
        }


def _one_line(text: str, limit: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def isolated_home(layout: StateLayout) -> CarsdepoHome:
    """The state folder the check's resources receive: ``layout``'s, with its own MLflow store,
    so that a developer's shared tracking server ($MLFLOW_TRACKING_URI) never receives the
    check's runs."""
    from carsdepo_assets.detection.champion import local_tracking_uri
    from carsdepo_assets.resources.state import CarsdepoHome

    return CarsdepoHome(path=str(layout.root), mlflow_tracking_uri=local_tracking_uri(layout))


def state_selection(defs):
    """Assets the checks look at, with their upstream, minus ``raw_images`` (ingested before
    the annotations are simulated) and those that need the Label Studio server."""
    from dagster import AssetSelection

    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    needs_server = [key for key in graph.materializable_asset_keys
                    if LABEL_STUDIO_RESOURCE in graph.get(key).assets_def.required_resource_keys]
    return (AssetSelection.assets(*checked).upstream()
            - AssetSelection.assets("raw_images", *needs_server)).materializable()


def _outcomes(result, all_check_keys) -> list[CheckOutcome]:
    """One row per check of the code location: its evaluation, or why it has none."""
    evaluated = {}
    for evaluation in result.get_asset_check_evaluations():
        key = evaluation.asset_check_key
        evaluated[key] = CheckOutcome(
            asset=key.asset_key.to_user_string(),
            check=key.name,
            partition=evaluation.partition,
            status=PASSED if evaluation.passed else FAILED,
            severity=evaluation.severity.value,
            description=evaluation.description or "",
        )
    from carsdepo_assets.cli.runner import step_failures

    failures = step_failures(result)
    outcomes = []
    for key in sorted(all_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        if key in evaluated:
            outcomes.append(evaluated[key])
            continue
        reason = next((message for step, message in failures.items() if key.name in step),
                      "; ".join(failures.values()) or "no evaluation was recorded")
        outcomes.append(CheckOutcome(key.asset_key.to_user_string(), key.name, None, NOT_RUN,
                                     "-", reason))
    return outcomes


def _step_errors(result) -> list[str]:
    from carsdepo_assets.cli.runner import step_failures

    return [f"{step}: {message}" for step, message in step_failures(result).items()]


def build_demo_state(defs, instance, layout: StateLayout, plan: CheckPlan) -> list[str]:
    """Synthesize, ingest, annotate (simulated) and materialize what the checks look at.

    Returns the errors of failed steps (empty when the whole state was built)."""
    from dagster import Definitions, define_asset_job

    from carsdepo_assets.cli.runner import run_job
    from carsdepo_assets.images.ingest import load_manifest
    from carsdepo_assets.labeling.coco_import import parse_coco
    from carsdepo_assets.labeling.history import write_snapshot
    from carsdepo_assets.labeling.simulated import AnnotatorProfile, simulated_snapshot
    from carsdepo_assets.synth import generate_dataset

    started = time.perf_counter()
    synth_dir = layout.synthetic_folder(plan.batch)
    generated = generate_dataset(synth_dir, n_images=plan.images, seed=plan.seed,
                                 width=plan.width, height=plan.height)
    say(f"    {generated.n_images} synthetic photos ({generated.n_clean} undamaged) "
        f"[{time.perf_counter() - started:.0f}s]")
    ingest = run_job("ingest_job", layout, defs=defs, instance=instance, partition_key=plan.batch,
                     run_config=plan.ingest_run_config(generated.images_dir),
                     raise_on_failure=False)
    if not ingest.success:
        return _step_errors(ingest)
    say(f"    ingested batch {plan.batch} through ingest_job "
        f"[{time.perf_counter() - started:.0f}s]")
    snapshot = simulated_snapshot(load_manifest(layout, plan.batch),
                                  parse_coco(generated.annotations_path),
                                  AnnotatorProfile(seed=plan.seed))
    write_snapshot(snapshot, layout.annotations)
    say(f"    simulated annotation snapshot {snapshot.version}: {len(snapshot.images)} images")
    build_job = define_asset_job("check_state_build", selection=state_selection(defs))
    with_build = Definitions.merge(defs, Definitions(jobs=[build_job]))
    job = with_build.resolve_job_def(build_job.name)
    names = sorted(node.to_user_string() for node in job.asset_layer.selected_asset_keys)
    say(f"    materializing {', '.join(names)} (detector: {plan.iterations} iterations)...")
    build = run_job(build_job.name, layout, defs=with_build, instance=instance,
                    partition_key=plan.batch, run_config=plan.build_run_config(),
                    raise_on_failure=False)
    say(f"    state built [{time.perf_counter() - started:.0f}s]")
    return _step_errors(build)


def run_checks(defs, instance, layout: StateLayout, plan: CheckPlan) -> list[CheckOutcome]:
    """Launch ``checks_job`` for the demo batch: the partition tag scopes per-batch checks."""
    from carsdepo_assets.cli.runner import run_job

    result = run_job(CHECKS_JOB, layout, defs=defs, instance=instance,
                     run_config=plan.checks_run_config(), tags={PARTITION_TAG: plan.batch},
                     raise_on_failure=False)
    return _outcomes(result, defs.resolve_asset_graph().asset_check_keys)


def check_demo_state(plan: CheckPlan = CheckPlan(), home: Path | None = None) -> CheckReport:
    """Build the demo state in ``home`` (default: a temporary folder, deleted afterwards) and
    run every asset check over it."""
    started = time.perf_counter()
    import mlflow

    from carsdepo_assets.cli.runner import local_instance
    from carsdepo_assets.definitions import build_definitions

    with contextlib.ExitStack() as stack:
        root = home or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="carsdepo-")))
        layout = StateLayout(Path(root).resolve()).ensure()
        defs = build_definitions(isolated_home(layout))
        stack.callback(mlflow.set_tracking_uri, None)  # MLflow's process-wide store, as it was
        instance = stack.enter_context(local_instance(layout))
        report = CheckReport(home=layout.root)
        say(f"==> building a demo state in {layout.root}")
        report.build_errors = build_demo_state(defs, instance, layout, plan)
        say("==> running checks_job (every asset check)")
        report.outcomes = run_checks(defs, instance, layout, plan)
        report.seconds = time.perf_counter() - started
    return report


def cmd_check(args: argparse.Namespace, layout: StateLayout) -> int:
    """``carsdepo check``: 0 when no ERROR-severity check failed and every check ran."""
    plan = CheckPlan(images=args.images, iterations=args.iterations, seed=args.seed)
    home = Path(args.keep).expanduser() if args.keep else None
    report = check_demo_state(plan, home)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.table())
        print(report.summary())
    return 0 if report.ok else 1


def register(command: AddCommand) -> None:
    parser = command(
        "check", cmd_check,
        "Run every asset check against a freshly built demo state in a temporary "
        "CARSDEPO_HOME; exit 1 on any ERROR-severity failure.",
    )
    defaults = CheckPlan()
    parser.add_argument("--images", type=int, default=defaults.images,
                        help=f"synthetic photos in the demo batch (default {defaults.images})")
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help=f"detector training iterations (default {defaults.iterations})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="synthetic data seed")
    parser.add_argument("--keep", metavar="DIR",
                        help="build the state in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
