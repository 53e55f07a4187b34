"""Model commands: answers from a registered model and the registry around it (``mlflow-ui``,
``predict``, ``serve``, ``rollback``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.prediction.limits import MIB, ServingLimits
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


def cmd_mlflow_ui(args: argparse.Namespace, layout: StateLayout) -> int:
    import os
    import subprocess

    from carsdepo_assets.detection.champion import mlflow_artifact_root, mlflow_tracking_uri

    layout = layout.ensure()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "ui",
        "--backend-store-uri", mlflow_tracking_uri(layout),
        "--host", "127.0.0.1", "--port", str(args.port),
    ]
    artifacts = mlflow_artifact_root(layout)
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    print(f"MLflow UI on http://127.0.0.1:{args.port}/#/experiments?workflowType=machine_learning "
          f"(store {mlflow_tracking_uri(layout)})")
    return subprocess.call(command, env={**os.environ, "PATH": f"{Path(sys.executable).parent}"
                                         f"{os.pathsep}{os.environ.get('PATH', '')}"})


def _registered_model(command: str, layout: StateLayout, name: str | None, choice: str):
    """The ModelRef that ``choice`` names, or None after saying on stderr why there is none."""
    from carsdepo_assets.detection.champion import MlflowUnreachableError, configure_mlflow
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


def cmd_predict(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.images.validate import ImagePolicy
    from carsdepo_assets.prediction.inputs import unusable_file_reason

    # the files first: a missing or unreadable one is named before the model loads
    unusable = [unusable_file_reason(path, ImagePolicy()) for path in args.images]
    if all(unusable):
        for path, reason in zip(args.images, unusable, strict=True):
            _print_answer({"image": path, "error": reason}, args.json)
        return _report_failures("predict", len(unusable), len(unusable))

    from carsdepo_assets.prediction.files import predict_files
    from carsdepo_assets.prediction.inference_log import InferenceLog
    from carsdepo_assets.prediction.pyfunc import load_registered_detector

    layout = layout.ensure()
    model = _registered_model("predict", layout, args.model_name, args.model)
    if model is None:
        return 2
    detector = load_registered_detector(model.uri)
    threshold = detector.config.score_threshold if args.threshold is None else args.threshold
    answers = predict_files(detector, args.images, model, threshold=threshold,
                            log=InferenceLog(layout.inference_log))
    for answer in answers:
        _print_answer({**answer, "model": model.name, "model_version": model.version,
                       "threshold": threshold}, args.json)
    return _report_failures("predict", sum("error" in answer for answer in answers),
                            len(answers))


def _print_answer(answer: dict, as_json: bool) -> None:
    print(json.dumps(answer) if as_json else _describe_answer(answer), flush=True)


def _report_failures(command: str, failed: int, total: int) -> int:
    if failed:
        print(f"carsdepo {command}: {failed} of {total} images could not be answered",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace, layout: StateLayout) -> int:
    import os

    try:
        limits = ServingLimits(
            max_body_bytes=round(args.max_body_mb * MIB), max_rows=args.max_rows,
            max_request_pixels=round(args.max_request_megapixels * 1_000_000),
            max_working_side=args.max_working_side, timeout_s=args.timeout,
            allowed_path_roots=tuple(_allowed_folders(args.allow_paths_under)),
        )
    except ValueError as error:
        print(f"carsdepo serve: {error}", file=sys.stderr)
        return 2

    from carsdepo_assets.detection.champion import mlflow_tracking_uri
    from carsdepo_assets.prediction.serving import DEFAULT_HOST, default_workers, serve_command

    layout = layout.ensure()
    model = _registered_model("serve", layout, args.model_name, args.model)
    if model is None:
        return 2
    workers = args.workers or default_workers()
    argv, env = serve_command(model, mlflow_tracking_uri(layout), layout.inference_log,
                              Path(sys.executable).parent, port=args.port, limits=limits,
                              workers=workers)
    paths = (f"files under {', '.join(limits.allowed_path_roots)}"
             if limits.allowed_path_roots else "no files (the path column is off)")
    print(f"serving {model} ({model.uri}) on http://{DEFAULT_HOST}:{args.port}/invocations "
          f"with {workers} worker process{'es' if workers > 1 else ''}; per request at most "
          f"{limits.max_body_bytes / MIB:g} MiB, {limits.max_rows} rows, "
          f"{limits.max_request_pixels / 1e6:g} megapixels, {limits.timeout_s:g} s; reads "
          f"{paths}; answers are recorded in {layout.inference_log}", flush=True)
    os.execve(argv[0], argv, env)  # the server replaces this process: Ctrl-C stops it


def _allowed_folders(folders: list[str] | None) -> list[str]:
    """The ``--allow-paths-under`` folders, absolute; ValueError for one that is not a folder."""
    import os

    absolute = [os.path.abspath(folder) for folder in folders or []]
    missing = [folder for folder in absolute if not os.path.isdir(folder)]
    if missing:
        raise ValueError(f"--allow-paths-under {missing[0]}: not a folder")
    return absolute


def cmd_rollback(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.detection.champion import (
        MlflowUnreachableError,
        RegistryError,
        configure_mlflow,
        current_champion,
        rollback,
    )
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME

    name = args.model_name or DEFAULT_MODEL_NAME
    try:
        configure_mlflow(layout.ensure())
        replaced = current_champion(name)
        restored = rollback(name)
    except (RegistryError, MlflowUnreachableError) as error:
        print(f"carsdepo rollback: {error}", file=sys.stderr)
        return 1
    print(f"{name}: version {restored} is the champion again (replacing version {replaced})")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a whole number of at least 1")
    return int(text)


def _score_threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a score threshold is within [0, 1]")
    return value


def register(command: AddCommand) -> None:
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
        "Serve a registered model over REST on 127.0.0.1 with MLflow's scoring app (POST "
        "/invocations), within a budget per request (body size, rows, decoded pixels, "
        "timeout); every answer is recorded in the inference log.",
    )
    serve.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    serve.add_argument(
        "--model", default="champion",
        help="champion (default), challenger or a registered version number",
    )
    serve.add_argument("--model-name", help=model_name_help)
    defaults = ServingLimits()
    serve.add_argument(
        "--workers", type=_positive_int,
        help="worker processes, each with its share of the cores and its copy of the model "
             "(default: one per core, at most four)",
    )
    serve.add_argument(
        "--timeout", type=float, default=defaults.timeout_s,
        help="seconds a request may take, waiting included; past it the work stops and the "
             f"client gets a 504 (default {defaults.timeout_s:g})",
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=defaults.max_body_bytes / MIB,
        help=f"largest request body in MiB, else 413 (default "
             f"{defaults.max_body_bytes / MIB:g})",
    )
    serve.add_argument(
        "--max-rows", type=_positive_int, default=defaults.max_rows,
        help=f"most images per request, else 400 (default {defaults.max_rows})",
    )
    serve.add_argument(
        "--max-request-megapixels", type=float, default=defaults.max_request_pixels / 1e6,
        help="most pixels the images of one request may declare, else 400 (default "
             f"{defaults.max_request_pixels / 1e6:g})",
    )
    serve.add_argument(
        "--max-working-side", type=_positive_int, default=defaults.max_working_side,
        help="a photo longer than this (pixels) is read at a reduced scale, bounding its tiles "
             f"(default {defaults.max_working_side})",
    )
    serve.add_argument(
        "--allow-paths-under", action="append", metavar="DIR",
        help="answer for the 'path' column's files under DIR (repeatable); without it the "
             "column is refused and only image bytes are read",
    )

    rollback = command(
        "rollback", cmd_rollback,
        "Give the champion alias back to the version the current champion replaced.",
    )
    rollback.add_argument("--model-name", help=model_name_help)
