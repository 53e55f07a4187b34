"""Data commands: the state folder, synthetic photos, ingestion, labelling and a batch's drift
(``init``, ``synth``, ``ingest``, ``labelstudio``, ``tasks``, ``annotate-simulated``,
``import-coco``, ``monitor``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.cli.console import progress_printer
from carsdepo_assets.state import (
    InvalidName,
    StateLayout,
    default_batch_name,
    validate_batch_name,
)

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


def cmd_init(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.cli.runner import local_instance

    layout = layout.ensure()
    local_instance(layout).dispose()  # its storage is created here, once, under the lock
    print(f"CARSDEPO_HOME ready at {layout.root}")
    return 0


def cmd_synth(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.synth import generate_dataset

    try:
        result = generate_dataset(
            Path(args.out),
            n_images=args.images,
            seed=args.seed,
            lighting=args.lighting,
            clean_share=args.clean_share,
            width=args.width,
            height=args.height,
            progress=progress_printer("synth"),
        )
    except (ValueError, FileExistsError, NotADirectoryError) as error:
        print(f"carsdepo synth: {error}", file=sys.stderr)
        return 2
    instances = ", ".join(f"{n} {name}" for name, n in result.instances_per_class.items())
    print(
        f"wrote {result.n_images} photos ({result.n_clean} without damage; {instances}) to "
        f"{result.images_dir}\nground truth: {result.annotations_path}"
    )
    return 0


def cmd_ingest(args: argparse.Namespace, layout: StateLayout) -> int:
    source = Path(args.dir).expanduser().resolve()
    batch = default_batch_name(source) if args.batch is None else args.batch
    try:  # the inputs first: a mistyped folder or name answers at once, before Dagster loads
        validate_batch_name(batch)
        if not source.is_dir():
            raise NotADirectoryError(f"batch folder {source} does not exist or is not a folder")
    except (InvalidName, NotADirectoryError) as error:
        print(f"carsdepo ingest: batch {batch!r} from {source} failed: {error}", file=sys.stderr)
        return 1

    from carsdepo_assets.cli.runner import ingest_batch_through_dagster
    from carsdepo_assets.fileio import explain_state_error
    from carsdepo_assets.images.summary import format_summary, manifest_summary_json

    try:
        manifest = ingest_batch_through_dagster(source, batch, layout.ensure())
    except Exception as error:  # the batch itself could not be processed
        print(f"carsdepo ingest: batch {batch!r} from {source} failed: "
              f"{explain_state_error(error, layout.root)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(manifest_summary_json(manifest), indent=2))
    else:
        print(format_summary(manifest))
    return 0


def cmd_labelstudio(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.labeling import server

    layout = layout.ensure()
    if args.action == "start":
        try:
            info = server.start(layout)
        except server.ServerError as error:
            print(f"carsdepo labelstudio start: {error}", file=sys.stderr)
            return 1
        from carsdepo_assets.cli.demo import server_login

        state = "already running" if info.already_running else "started"
        print(f"Label Studio {state} at {info.url} (pid {info.pid}, log {info.log_path}); "
              f"log in as {server_login()}")
        return 0
    if args.action == "stop":
        stopped = server.stop(layout)
        print("Label Studio stopped" if stopped else "Label Studio was not running")
        return 0
    info = server.status(layout)
    if info is None:
        print("Label Studio is not running (start it with `carsdepo labelstudio start`)")
        return 3
    print(f"Label Studio is running at {info.url} (pid {info.pid})")
    return 0


def run_batch_job(command: str, job_name: str, batch: str, layout: StateLayout):
    """Run a per-batch job on an ingested batch; None after saying on stderr why it could not
    run (the batch is not ingested, the run failed)."""
    try:
        validate_batch_name(batch)
    except InvalidName as error:
        print(f"carsdepo {command}: {error}", file=sys.stderr)
        return None
    if not layout.manifest_path(batch).is_file():
        print(f"carsdepo {command}: batch {batch!r} is not ingested in {layout.root}: "
              "`carsdepo ingest DIR --batch NAME` first", file=sys.stderr)
        return None
    from carsdepo_assets.cli.runner import RunFailed, run_job

    try:
        return run_job(job_name, layout.ensure(), partition_key=batch)
    except RunFailed as error:
        print(f"carsdepo {command}: {error}", file=sys.stderr)
        return None


def cmd_tasks(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.cli.runner import materialization_metadata

    result = run_batch_job("tasks", "labeling_job", args.batch, layout)
    if result is None:
        return 1
    tasks = materialization_metadata(result, "label_studio_tasks")
    print(f"batch {args.batch}: {tasks.get('tasks_created')} tasks created, "
          f"{tasks.get('tasks_existing')} already there, in {tasks.get('project_url')}")
    if tasks.get("pre_annotations_added"):
        print(f"{tasks['pre_annotations_added']} pre-annotations of {tasks['pre_annotations']} "
              "(least confident served first: review them rather than draw)")
    return 0


def cmd_monitor(args: argparse.Namespace, layout: StateLayout) -> int:
    if run_batch_job("monitor", "monitoring_job", args.batch, layout) is None:
        return 1
    decision = json.loads(layout.decision_path(args.batch).read_text())  # this run's, as written
    deviation = decision.get("deviation")
    measured = "no deviation measured" if deviation is None else f"deviation {deviation:.1f}%"
    print(f"batch {args.batch}: {measured} -> {decision['action']}")
    for reason in decision.get("reasons", ()):
        print(f"  {reason}")
    return 0


def cmd_annotate_simulated(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.labeling.server import MissingSecret
    from carsdepo_assets.labeling.simulated import AnnotatorProfile, annotate_batch_simulated
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    layout = layout.ensure()
    profile = AnnotatorProfile(seed=args.seed)
    try:
        label_studio = LabelStudioResource.from_env(layout)
    except MissingSecret as missing:
        print(f"carsdepo annotate-simulated: {missing}", file=sys.stderr)
        return 1
    report = annotate_batch_simulated(
        label_studio, layout, args.batch, Path(args.ground_truth), profile
    )
    print(json.dumps(report.summary(), indent=2))
    return 0


def cmd_import_coco(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.cli.runner import RunFailed, ingest_batch_through_dagster
    from carsdepo_assets.labeling.coco_import import (
        CocoImportError,
        import_coco_annotations,
        load_category_map,
        parse_coco,
    )
    from carsdepo_assets.labeling.server import MissingSecret
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    layout = layout.ensure()
    try:
        label_studio = LabelStudioResource.from_env(layout)
        category_map = load_category_map(Path(args.category_map)) if args.category_map else None
        parsed = parse_coco(Path(args.annotations), category_map, args.keep_splits)
        manifest = ingest_batch_through_dagster(Path(args.images_dir).resolve(), args.batch,
                                                layout)
    except (CocoImportError, FileNotFoundError, RunFailed, InvalidName, MissingSecret) as error:
        print(f"carsdepo import-coco: {error}", file=sys.stderr)
        return 1
    report = import_coco_annotations(label_studio.for_split(args.keep_splits), layout, manifest,
                                     parsed,
                                     progress=progress_printer("import-coco"))
    print(json.dumps(report.summary(), indent=2))
    return 0


def register(command: AddCommand) -> None:
    command("init", cmd_init, "Create the state directory and the local Dagster instance.")

    synth = command("synth", cmd_synth, "Write synthetic car-panel photos and COCO ground truth.")
    synth.add_argument("--out", required=True, help="output folder (images/ + annotations.json)")
    synth.add_argument("--images", type=int, default=100, help="number of photos (default 100)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    synth.add_argument(
        "--lighting", default="normal", choices=["normal", "dim", "very-dim", "harsh"],
        help="lighting preset (default normal)",
    )
    synth.add_argument(
        "--clean-share", type=float, default=0.25, help="share of undamaged photos (default 0.25)"
    )
    synth.add_argument("--width", type=int, default=640, help="image width (default 640)")
    synth.add_argument("--height", type=int, default=480, help="image height (default 480)")

    ingest = command(
        "ingest", cmd_ingest,
        "Ingest a folder of photos as one batch (a raw_images partition) through Dagster.",
    )
    ingest.add_argument("dir", help="folder with the batch's photos (subfolders included)")
    ingest.add_argument(
        "--batch", help="batch name: 1-128 letters, digits, '.', '_', '-' (default: the "
        "folder's name made valid, 'Lot 12 (June)' -> Lot-12-June)")
    ingest.add_argument("--json", action="store_true", help="print the manifest summary as JSON")

    labelstudio = command(
        "labelstudio", cmd_labelstudio,
        "Run the local Label Studio server (127.0.0.1, data under CARSDEPO_HOME/label-studio).",
    )
    labelstudio.add_argument("action", choices=["start", "stop", "status"])

    tasks = command(
        "tasks", cmd_tasks,
        "Send an ingested batch's photos to Label Studio as tasks to label (labeling_job), "
        "with the champion's pre-annotations when there is one. Exit 1 when it could not.",
    )
    tasks.add_argument("batch", help="the ingested batch")

    simulated = command(
        "annotate-simulated", cmd_annotate_simulated,
        "Annotate a synthetic batch's tasks in Label Studio from its ground truth, with "
        "realistic imperfections (box jitter, missed boxes, skipped tasks).",
    )
    simulated.add_argument("--batch", required=True, help="the ingested batch")
    simulated.add_argument(
        "--ground-truth", required=True,
        help="the synthetic folder (holding annotations.json) the batch was generated into",
    )
    simulated.add_argument("--seed", type=int, default=0, help="seed of the simulated annotator")

    import_coco = command(
        "import-coco", cmd_import_coco,
        "Ingest labelled photos as a batch and bring their COCO boxes into Label Studio as "
        "completed (imported) annotations.",
    )
    import_coco.add_argument("images_dir", help="folder of the photos")
    import_coco.add_argument("annotations", help="COCO detection JSON for those photos")
    import_coco.add_argument("--batch", required=True, help="batch name for the photos")
    import_coco.add_argument(
        "--category-map",
        help="JSON/YAML: source category -> scratch | dent | null (default: *-scratch -> "
        "scratch, *-dent -> dent, others dropped)",
    )
    import_coco.add_argument(
        "--keep-splits", metavar="SPLIT", choices=["train", "val", "test"],
        help="pin every imported image to this published split instead of hash splitting",
    )

    monitor = command(
        "monitor", cmd_monitor,
        "Profile an ingested batch, measure its drift against the champion's training data and "
        "print what it calls for: no_action, retrain or experiment (monitoring_job; "
        "drift_sensor acts on the decision). Exit 1 when it could not run.",
    )
    monitor.add_argument("batch", help="the ingested batch")
