"""Model commands: answers from a registered model and the registry around it (``mlflow-ui``,
``predict``, ``serve``, ``rollback``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

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
    from carsdepo_assets.prediction.files import predict_files
    from carsdepo_assets.prediction.inference_log import InferenceLog
    from carsdepo_assets.prediction.pyfunc import load_registered_detector

    layout = layout.ensure()
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


def cmd_serve(args: argparse.Namespace, layout: StateLayout) -> int:
    import os

    from carsdepo_assets.detection.champion import mlflow_tracking_uri
    from carsdepo_assets.prediction.serving import DEFAULT_HOST, serve_command

    layout = layout.ensure()
    model = _registered_model("serve", layout, args.model_name, args.model)
    if model is None:
        return 2
    argv, env = serve_command(model, args.model, mlflow_tracking_uri(layout),
                              layout.inference_log, Path(sys.executable).parent, port=args.port)
    print(f"serving {model} ({argv[argv.index('-m') + 1]}) on "
          f"http://{DEFAULT_HOST}:{args.port}/invocations; answers are recorded in "
          f"{layout.inference_log}", flush=True)
    os.execve(argv[0], argv, env)  # the server replaces this process: Ctrl-C stops it


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
