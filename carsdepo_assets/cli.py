"""``carsdepo`` — the command line: argument parsing only; the work is in Dagster or the domain.

Heavy imports (torch, dagster, mlflow) happen inside the command handlers so that ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from carsdepo_assets.console import progress_printer
from carsdepo_assets.state import StateLayout

Handler = Callable[[argparse.Namespace], int]


def cmd_init(args: argparse.Namespace) -> int:
    from carsdepo_assets.instance import prepare_dagster_home

    layout = StateLayout.from_env().ensure()
    prepare_dagster_home(layout)
    print(f"CARSDEPO_HOME ready at {layout.root}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
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


def cmd_ingest(args: argparse.Namespace) -> int:
    from carsdepo_assets.images.summary import format_summary, manifest_summary_json
    from carsdepo_assets.runner import ingest_batch_through_dagster

    source = Path(args.dir).expanduser().resolve()
    batch = args.batch or source.name
    try:
        manifest = ingest_batch_through_dagster(source, batch)
    except Exception as error:  # the batch itself could not be processed
        print(f"carsdepo ingest: batch {batch!r} from {source} failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(manifest_summary_json(manifest), indent=2))
    else:
        print(format_summary(manifest))
    return 0


def cmd_labelstudio(args: argparse.Namespace) -> int:
    from carsdepo_assets.labeling import server

    layout = StateLayout.from_env().ensure()
    if args.action == "start":
        try:
            info = server.start(layout)
        except server.ServerError as error:
            print(f"carsdepo labelstudio start: {error}", file=sys.stderr)
            return 1
        state = "already running" if info.already_running else "started"
        print(f"Label Studio {state} at {info.url} (pid {info.pid}, log {info.log_path})")
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


def cmd_annotate_simulated(args: argparse.Namespace) -> int:
    from carsdepo_assets.labeling.simulated import AnnotatorProfile, annotate_batch_simulated
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    layout = StateLayout.from_env().ensure()
    profile = AnnotatorProfile(seed=args.seed)
    report = annotate_batch_simulated(
        LabelStudioResource.from_env(), layout, args.batch, Path(args.ground_truth), profile
    )
    print(json.dumps(report.summary(), indent=2))
    return 0


def cmd_import_coco(args: argparse.Namespace) -> int:
    from carsdepo_assets.labeling.coco_import import (
        CocoImportError,
        import_coco_annotations,
        load_category_map,
        parse_coco,
    )
    from carsdepo_assets.resources.label_studio import LabelStudioResource
    from carsdepo_assets.runner import RunFailed, ingest_batch_through_dagster

    layout = StateLayout.from_env().ensure()
    try:
        category_map = load_category_map(Path(args.category_map)) if args.category_map else None
        parsed = parse_coco(Path(args.annotations), category_map, args.keep_splits)
        manifest = ingest_batch_through_dagster(Path(args.images_dir).resolve(), args.batch)
    except (CocoImportError, FileNotFoundError, RunFailed) as error:
        print(f"carsdepo import-coco: {error}", file=sys.stderr)
        return 1
    report = import_coco_annotations(LabelStudioResource.from_env(), layout, manifest, parsed,
                                     progress=progress_printer("import-coco"))
    print(json.dumps(report.summary(), indent=2))
    return 0


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from carsdepo_assets.detection.registry import mlflow_artifact_root, mlflow_tracking_uri

    layout = StateLayout.from_env().ensure()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "ui",
        "--backend-store-uri", mlflow_tracking_uri(layout),
        "--host", "127.0.0.1", "--port", str(args.port),
    ]
    artifacts = mlflow_artifact_root(layout)
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {mlflow_tracking_uri(layout)})")
    return subprocess.call(command, env={**os.environ, "PATH": f"{Path(sys.executable).parent}"
                                         f"{os.pathsep}{os.environ.get('PATH', '')}"})


def _registered_model(command: str, layout: StateLayout, name: str | None, choice: str):
    """The ModelRef that ``choice`` names, or None after saying on stderr why there is none."""
    from carsdepo_assets.detection.registry import MlflowUnreachableError, configure_mlflow
    from carsdepo_assets.prediction.models import ModelNotFound, resolve_model
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME

    try:
        configure_mlflow(layout)
        return resolve_model(name or DEFAULT_MODEL_NAME, choice)
    except (ModelNotFound, ValueError, MlflowUnreachableError) as error:
        print(f"carsdepo {command}: {error}", file=sys.stderr)
        return None


def _describe_answer(answer: dict) -> str:
    if "error" in answer:
        return f"{answer['image']}: error: {answer['error']}"
    if isinstance(answer["damage"], str):
        return f"{answer['image']}: {answer['damage']}"
    found = "; ".join(f"{d['label']} {d['score']:.2f} at {d['box']}" for d in answer["damage"])
    return f"{answer['image']}: {found}"


def cmd_predict(args: argparse.Namespace) -> int:
    from carsdepo_assets.detection.pyfunc import load_registered_detector
    from carsdepo_assets.prediction.files import predict_files
    from carsdepo_assets.prediction.inference_log import InferenceLog

    layout = StateLayout.from_env().ensure()
    model = _registered_model("predict", layout, args.model_name, args.model)
    if model is None:
        return 2
    answers = predict_files(load_registered_detector(model.uri), args.images, model,
                            threshold=args.threshold, log=InferenceLog(layout.inference_log))
    for answer in answers:
        print(json.dumps(answer) if args.json else _describe_answer(answer), flush=True)
    failed = sum("error" in answer for answer in answers)
    if failed:
        print(f"carsdepo predict: {failed} of {len(answers)} images could not be answered",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from carsdepo_assets.detection.registry import mlflow_tracking_uri
    from carsdepo_assets.prediction.serving import DEFAULT_HOST, serve_command

    layout = StateLayout.from_env().ensure()
    model = _registered_model("serve", layout, args.model_name, args.model)
    if model is None:
        return 2
    argv, env = serve_command(model, args.model, mlflow_tracking_uri(layout),
                              layout.inference_log, Path(sys.executable).parent, port=args.port)
    print(f"serving {model} ({argv[argv.index('-m') + 1]}) on "
          f"http://{DEFAULT_HOST}:{args.port}/invocations; answers are recorded in "
          f"{layout.inference_log}", flush=True)
    os.execve(argv[0], argv, env)  # the server replaces this process: Ctrl-C stops it


def cmd_rollback(args: argparse.Namespace) -> int:
    from carsdepo_assets.detection.registry import (
        MlflowUnreachableError,
        RegistryError,
        configure_mlflow,
        current_champion,
        rollback,
    )
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME

    name = args.model_name or DEFAULT_MODEL_NAME
    try:
        configure_mlflow(StateLayout.from_env().ensure())
        replaced = current_champion(name)
        restored = rollback(name)
    except (RegistryError, MlflowUnreachableError) as error:
        print(f"carsdepo rollback: {error}", file=sys.stderr)
        return 1
    print(f"{name}: version {restored} is the champion again (replacing version {replaced})")
    return 0


def _score_threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a score threshold is within [0, 1]")
    return value


def cmd_check(args: argparse.Namespace) -> int:
    from carsdepo_assets.checks_runner import run_from_args

    return run_from_args(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from carsdepo_assets.demo import run_demo

    return run_demo(
        images=args.images, seed=args.seed, iterations=args.iterations, backend=args.backend
    )


def cmd_train_real(args: argparse.Namespace) -> int:
    from carsdepo_assets.detection.config import ConfigError
    from carsdepo_assets.labeling.coco_import import CocoImportError
    from carsdepo_assets.labeling.server import ServerError
    from carsdepo_assets.real_data import RealDataError, train_on_real_data
    from carsdepo_assets.runner import RunFailed

    try:
        train_on_real_data(Path(args.data), preset=args.preset, backend=args.backend,
                           iterations=args.iterations)
    except (RealDataError, CocoImportError, ConfigError, ServerError, RunFailed) as error:
        print(f"carsdepo train-real: {error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carsdepo",
        description="carsdepo: find scratches and dents (or 'None') on used-car photos. "
        "State lives under $CARSDEPO_HOME (default: .carsdepo/ in the checkout).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

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
    ingest.add_argument("--batch", help="batch name (default: the folder's name)")
    ingest.add_argument("--json", action="store_true", help="print the manifest summary as JSON")

    labelstudio = command(
        "labelstudio", cmd_labelstudio,
        "Run the local Label Studio server (127.0.0.1, data under CARSDEPO_HOME/label-studio).",
    )
    labelstudio.add_argument("action", choices=["start", "stop", "status"])

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

    mlflow_ui = command(
        "mlflow-ui", cmd_mlflow_ui, "Open MLflow's UI over carsdepo's tracking store."
    )
    mlflow_ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")

    model_name_help = "registered model (default: carsdepo-damage-detector)"
    predict = command(
        "predict", cmd_predict,
        'Answer for photos with a registered model: "None" or the damage found. Exit code 1 '
        "when an image could not be answered, 2 when there is no such model.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="photo files")
    predict.add_argument(
        "--model", default="champion",
        help="champion (default), challenger or a registered version number",
    )
    predict.add_argument(
        "--threshold", type=_score_threshold,
        help="operating score threshold in [0, 1] (default: the model's own)",
    )
    predict.add_argument("--json", action="store_true", help="print one JSON object per image")
    predict.add_argument("--model-name", help=model_name_help)

    serve = command(
        "serve", cmd_serve,
        "Serve a registered model over REST with MLflow's server on 127.0.0.1 "
        "(POST /invocations); every answer is recorded in the inference log.",
    )
    serve.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    serve.add_argument(
        "--model", default="champion",
        help="champion (default), challenger or a registered version number",
    )
    serve.add_argument("--model-name", help=model_name_help)

    rollback = command(
        "rollback", cmd_rollback,
        "Give the champion alias back to the version the current champion replaced.",
    )
    rollback.add_argument("--model-name", help=model_name_help)

    from carsdepo_assets.checks_runner import add_arguments as add_check_arguments

    check = command(
        "check", cmd_check,
        "Run every asset check against a freshly built demo state in a temporary "
        "CARSDEPO_HOME; exit 1 on any ERROR-severity failure.",
    )
    add_check_arguments(check)

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

    from carsdepo_assets.real_data import DEFAULT_DATA_DIR, PRESET_CHOICES

    train_real = command(
        "train-real", cmd_train_real,
        "Train on the real lensor car-damage photos (published train split, val for model "
        "selection) and evaluate on their test split; run it in a CARSDEPO_HOME of its own "
        "(`make train-real` uses .carsdepo-real). About an hour on 2 CPU cores.",
    )
    train_real.add_argument(
        "--data", default=str(DEFAULT_DATA_DIR),
        help="the data set: images/<split>/ and annotations/instances_<split>.json "
        "(default: %(default)s)",
    )
    train_real.add_argument(
        "--preset", default="auto", choices=PRESET_CHOICES,
        help="detector preset (default auto: gpu where CUDA is there, else real_cpu)",
    )
    train_real.add_argument(
        "--backend", default="auto", choices=["auto", "torchvision", "detectron2"],
        help="detector backend (default auto: detectron2 when installed, else torchvision)",
    )
    train_real.add_argument(
        "--iterations", type=int, help="training iterations (default: the preset's)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
