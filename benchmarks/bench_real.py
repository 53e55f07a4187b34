"""Real-data accuracy: AP50, AP and per-class AP50 on the lensor test split (76 real photos).

    python -m benchmarks.bench_real [--home DIR] [--iterations N] [--preset auto]
    python -m benchmarks.bench_real --reuse      # record the last `make train-real`, no training
    python -m benchmarks.bench_real --reuse --eval-sizes 960 1280   # and at other input sizes

Trains as `make train-real` does (``carsdepo train-real``, in a temporary CARSDEPO_HOME unless
``--home`` names one to keep, with Label Studio on a free port), then records the test-split
figures of its report. ``--reuse`` records the report already in ``--home`` (default
``.carsdepo-real``, where `make train-real` leaves it). The data set's class map and split
caveats: see carsdepo_assets/cli/train_real.py. About an hour on two CPU cores (``real_cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._record import record
from benchmarks.bench_demo import free_port

SUITE = "real"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
AP50_TARGET = 0.20  # issue 5: "aim above 0.20" on 2 CPU cores within an hour
FIGURES = (  # report metric -> recorded name
    ("AP50", "real_test_AP50"),
    ("AP", "real_test_AP"),
    ("AP50_scratch", "real_test_AP50_scratch"),
    ("AP50_dent", "real_test_AP50_dent"),
    ("AP_scratch", "real_test_AP_scratch"),
    ("AP_dent", "real_test_AP_dent"),
    ("AP75", "real_test_AP75"),
)


def train(home: Path, args: argparse.Namespace) -> None:
    command = [sys.executable, "-m", "carsdepo_assets.cli", "train-real",
               "--preset", args.preset, "--backend", args.backend]
    if args.data:
        command += ["--data", args.data]
    if args.iterations:
        command += ["--iterations", str(args.iterations)]
    env = {**os.environ, "CARSDEPO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_URI": ""}
    try:
        subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True)
    finally:  # the Label Studio this run started on its free port
        subprocess.run([sys.executable, "-m", "carsdepo_assets.cli", "labelstudio", "stop"],
                       cwd=PROJECT_ROOT, env=env, check=False)


def record_report(report: dict) -> None:
    metrics = report["test_metrics"]
    config = report.get("config") or {}
    data = (f"lensor test split, {report['test_images']} real 640x640 photos; "
            f"{report['backend']} {report['preset']} preset: {config.get('backbone')}, "
            f"{config.get('iterations')} it x {config.get('batch_size')} at "
            f"{config.get('min_size')}-{config.get('max_size')} px")
    common = {"backend": report["backend"], "preset": report["preset"],
              "model_version": report["model_version"]}
    for metric, name in FIGURES:
        if metric not in metrics:
            continue
        extra = dict(common)
        if metric == "AP50":
            extra.update(target=AP50_TARGET, target_met=metrics[metric] >= AP50_TARGET,
                         missed_by=round(max(0.0, AP50_TARGET - metrics[metric]), 4))
        record(SUITE, name, round(metrics[metric], 4), "AP", data, **extra)
    record(SUITE, "real_train_wall", report["train_wall_s"], "s", data, **common,
           images_per_s=report["train_images_per_s"])


def record_resized(home: Path, report: dict, sizes: list[int]) -> None:
    """The trained model evaluated at other input sizes (test-time resizing, no retraining):
    how much does input resolution limit it?"""
    from carsdepo_assets.datasets import load_dataset
    from carsdepo_assets.detection.champion import configure_mlflow
    from carsdepo_assets.detection.evaluate import evaluate_on_split
    from carsdepo_assets.prediction.pyfunc import load_registered_detector
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME
    from carsdepo_assets.state import StateLayout

    configure_mlflow(StateLayout(home.resolve()))
    detector = load_registered_detector(f"models:/{DEFAULT_MODEL_NAME}/{report['model_version']}")
    dataset = load_dataset(Path(report["dataset"]))
    trained_at = detector.config.max_size
    for size in sizes:
        detector.config = detector.config.replace(min_size=size, max_size=size)
        result, _, ms_per_image = evaluate_on_split(detector, dataset.coco("test"),
                                                    dataset.image_root)
        metrics = result.flat_metrics()
        data = (f"lensor test split, {report['test_images']} photos; the {report['preset']} model "
                f"(trained at {trained_at} px) resized to {size} px at test time")
        extra = {"backend": report["backend"], "variant": f"eval {size}px",
                 "model_version": report["model_version"]}
        for metric in ("AP50", "AP", "AP50_scratch", "AP50_dent"):
            record(SUITE, f"real_test_{metric}", round(metrics.get(metric, 0.0), 4), "AP",
                   data, **extra)
        record(SUITE, "real_test_ms_per_image", round(ms_per_image, 1), "ms/image", data, **extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path,
                        help="CARSDEPO_HOME to train in and keep (default: a temporary one; "
                        "with --reuse: .carsdepo-real)")
    parser.add_argument("--reuse", action="store_true",
                        help="record the report already in --home instead of training")
    parser.add_argument("--data", help="the data set folder (default: train-real's)")
    parser.add_argument("--preset", default="auto", help="auto | real_cpu | gpu")
    parser.add_argument("--backend", default="auto", help="auto | torchvision | detectron2")
    parser.add_argument("--iterations", type=int, help="training iterations (preset's default)")
    parser.add_argument("--eval-sizes", type=int, nargs="+", default=[], metavar="PX",
                        help="also evaluate the trained model resized to these input sizes")
    args = parser.parse_args(argv)
    if args.reuse:
        measure(args.home or PROJECT_ROOT / ".carsdepo-real", args.eval_sizes)
    elif args.home:
        train(args.home.resolve(), args)
        measure(args.home, args.eval_sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-real-") as home:
            train(Path(home), args)
            measure(Path(home), args.eval_sizes)


def measure(home: Path, eval_sizes: list[int]) -> None:
    report = read_report(home)
    record_report(report)
    if eval_sizes:
        record_resized(home, report, eval_sizes)


def read_report(home: Path) -> dict:
    path = home.resolve() / "reports" / "real_data.json"
    if not path.is_file():
        raise SystemExit(f"no real-data report at {path}: run `make train-real` first")
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
