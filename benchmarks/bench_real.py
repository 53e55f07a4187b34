"""Real-data accuracy: AP50, AP and per-class AP50 on the lensor test split (71 of its 76 photos;
the 5 with only "broken" damage are left out).

    python -m benchmarks.bench_real [--home DIR] [--iterations N] [--preset auto]
    python -m benchmarks.bench_real --reuse      # record the last `make train-real`, no training
    python -m benchmarks.bench_real --reuse --eval-sizes 960 1280   # and at other input sizes
    python -m benchmarks.bench_real --reuse --variant NAME   # a `train-real --variant NAME` run
    python -m benchmarks.bench_real --ablation [--variants baseline "all changes"]
    python -m benchmarks.bench_real --ablation --variants "all changes" --seeds 0 1 2 \
        --evaluate-also "flip TTA" --operating-precisions 0.4 0.5
    python -m benchmarks.bench_real --reuse --variant "all changes, seed 0" --evaluate-also ...
    python -m benchmarks.bench_real --ablation --variants "all changes" --seeds 0 1 2 \
        --set ema_decay=0.995                       # a change tried on top, three seeds
    python -m benchmarks.bench_real --ablation --seeds 0 1 2 \
        --variants "all but repeat_factors" "all but backbone_lr"   # leave-one-out rows

Trains as `make train-real` does (``carsdepo train-real``, in a temporary CARSDEPO_HOME unless
``--home`` names one to keep, with Label Studio on a free port), then records the test-split
figures of its report and the sliced prediction time of a 1600x1200 photo. ``--reuse`` records
the report already in ``--home`` (default ``.carsdepo-real``, where `make train-real` leaves
it). ``--ablation`` trains its variants one after another in ``--home`` (default
``.carsdepo-real``: the photos are imported once, each variant adds a model version), once per
``--seeds`` seed, and prints each variant's mean and range over the seeds; ``--evaluate-also``
evaluates every model of it again predicting another way (the mirrored pass, dent-aware scales)
and ``--operating-precisions`` with operating points chosen on val, the same weights, so each
seed is a paired comparison. The data
set's class map and split caveats: see carsdepo_assets/cli/train_real.py. About an hour on two
CPU cores (``real_cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._record import record
from benchmarks.bench_demo import free_port
from carsdepo_assets.cli.train import parse_overrides
from carsdepo_assets.cli.train_real import TABLE_COLUMNS, TARGETS, report_file, table_markdown

SUITE = "real"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".carsdepo-real"  # where `make train-real` trains
NATIVE_PHOTO = (1600, 1200)  # a listing photo's size for the sliced-inference time
NATIVE_MS_TARGET = 1500.0
FIGURES = (  # report metric -> recorded name
    ("AP50", "real_test_AP50"),
    ("AP", "real_test_AP"),
    ("AP50_scratch", "real_test_AP50_scratch"),
    ("AP50_dent", "real_test_AP50_dent"),
    ("AP_scratch", "real_test_AP_scratch"),
    ("AP_dent", "real_test_AP_dent"),
    ("AP75", "real_test_AP75"),
    ("damage_AP50", "real_test_damage_AP50"),
    ("APs", "real_test_APs"),
    ("none_accuracy", "real_test_none_accuracy"),
    ("precision", "real_test_precision"),  # at the operating point
    ("recall", "real_test_recall"),
)


def train(home: Path, args: argparse.Namespace, overrides: dict | None = None,
          variant: str | None = None) -> None:
    command = [sys.executable, "-m", "carsdepo_assets.cli", "train-real",
               "--preset", args.preset, "--backend", args.backend]
    command += [f"--set={key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    if variant:
        command += ["--variant", variant]
    if args.data:
        command += ["--data", args.data]
    if args.iterations:
        command += ["--iterations", str(args.iterations)]
    env = {**os.environ, "CARSDEPO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_URI": ""}
    stop_label_studio = [sys.executable, "-m", "carsdepo_assets.cli", "labelstudio", "stop"]
    # one left running on another port (`make train-real` leaves its own up) would be reused
    subprocess.run(stop_label_studio, cwd=PROJECT_ROOT, env=env, check=False)
    try:
        subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True)
    finally:  # the Label Studio this run started on its free port
        subprocess.run(stop_label_studio, cwd=PROJECT_ROOT, env=env, check=False)


def record_report(report: dict) -> None:
    metrics = report["test_metrics"]
    config = report.get("config") or {}
    data = (f"lensor test split, {report['test_images']} real 640x640 photos; "
            f"{report['backend']} {report['preset']} preset: {config.get('backbone')}, "
            f"{config.get('iterations')} it x {config.get('batch_size')} at "
            f"{config.get('min_size')}-{config.get('max_size')} px")
    common = {"backend": report["backend"], "preset": report["preset"],
              "model_version": report["model_version"],
              **({"variant": report["variant"]} if report.get("variant") else {}),
              **({"overrides": report["overrides"]} if report.get("overrides") else {})}
    targets = TARGETS if report["preset"] == "real_cpu" else {}  # issue 12's, for make train-real
    record_test_metrics(metrics, data, targets, **common)
    record(SUITE, "real_train_wall", report["train_wall_s"], "s", data, **common,
           images_per_s=report["train_images_per_s"])


def ablation_variants(only: list[str] | None = None) -> dict[str, dict]:
    """The small-damage design's ablation at real_cpu_short's fixed budget: the old design
    (every change undone), all together, each change alone ("X only") and each change left
    out of the rest ("all but X", the leave-one-out ablation)."""
    from carsdepo_assets.detection.config import WITHOUT_CHANGE

    # the ends first, so that a cut-short run still compares them
    variants = {"baseline": undone(WITHOUT_CHANGE), "all changes": {}}
    for change in WITHOUT_CHANGE:
        variants[f"{change} only"] = undone(WITHOUT_CHANGE, keep=change)
    for change, undo in WITHOUT_CHANGE.items():
        variants[f"all but {change}"] = dict(undo)
    if only:
        unknown = sorted(set(only) - set(variants))
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}: expected some of {list(variants)}")
        variants = {name: overrides for name, overrides in variants.items() if name in only}
    return variants


def undone(without_change: dict[str, dict], keep: str | None = None) -> dict:
    """The config overrides that undo every change of issue 12 but ``keep``."""
    return {key: value for name, undo in without_change.items() if name != keep
            for key, value in undo.items()}


def run_ablation(args: argparse.Namespace) -> None:
    """Train and record every variant once per seed (one training at a time) in one state
    folder, then print the table of every run and of each variant's mean and range."""
    args.preset = "real_cpu_short"
    home = (args.home or DEFAULT_HOME).resolve()
    rows: dict[str, dict] = {}
    by_variant: dict[str, list[dict]] = {}
    changed = parse_overrides(args.set or [])
    for variant, overrides in ablation_variants(args.variants).items():
        if changed:  # a change tried on top of each variant, named in its rows
            variant += " with " + ", ".join(f"{key}={value}" for key, value in changed.items())
            overrides = {**overrides, **changed}
        for seed in args.seeds or [None]:
            name = variant if seed is None else f"{variant}, seed {seed}"
            train(home, args, {**overrides, **({} if seed is None else {"seed": seed})}, name)
            report = read_report(home, name)
            record_report(report)
            rows[name] = report["test_metrics"]
            by_variant.setdefault(variant, []).append(rows[name])
            if args.evaluate_also or args.operating_precisions:
                again = evaluate_again(load_model(home, report), load_report_dataset(report),
                                       report, args)
                for label, metrics in again.items():
                    rows[f"{name} + {label}"] = metrics
                    by_variant.setdefault(f"{variant} + {label}", []).append(metrics)
            print(table_markdown(rows), flush=True)
    if args.seeds:
        print(seed_table(by_variant), flush=True)


# Ways to predict with a trained model that change prediction alone (the same weights), for
# --evaluate-also: each a paired comparison with the model as trained.
PREDICTION_VARIANTS: dict[str, dict] = {
    "flip TTA": {"flip_tta": True},  # the mirrored pass, merged like the tiles
    # dent-aware scales: the whole-image pass at the scale the crops train at (lensor's 640 px
    # photos at 2x), so that a dent the tiles cut is also seen whole at its trained scale ...
    "whole pass at 1280 px": {"min_size": 1280, "max_size": 1280},
    # ... or tiles large enough for most dents at that scale
    "768 px tiles": {"tile_size": 768},
}


def evaluate_again(detector, dataset, report: dict, args: argparse.Namespace) -> dict[str, dict]:
    """The trained model evaluated again on the test split in each way of
    ``args.evaluate_also`` and with operating points for each of ``args.operating_precisions``,
    each recorded as its own row; the test metrics by row label."""
    trained = detector.config
    variant = report.get("variant") or report["preset"]
    rows = {}
    for label in args.evaluate_also or []:
        detector.config = trained.replace(**PREDICTION_VARIANTS[label])
        rows[label] = evaluate_test_split(detector, dataset)
        data = (f"lensor test split, {report['test_images']} photos; the {variant} model "
                f"evaluated again with {PREDICTION_VARIANTS[label]}, the same weights")
        record_test_metrics(rows[label], data, backend=report["backend"],
                            preset=report["preset"], variant=f"{variant} + {label}",
                            model_version=report["model_version"])
    detector.config = trained
    if args.operating_precisions:
        rows.update(record_operating_points(detector, dataset, report,
                                            args.operating_precisions))
    return rows


def record_operating_points(detector, dataset, report: dict,
                            precisions: list[float]) -> dict[str, dict]:
    """The model evaluated on the test split with each class's operating point chosen on val
    for each of ``precisions`` (``config.operating_precision``, the same weights; AP per class
    is unchanged, precision, recall and the "None" answers are what moves). Returns the test
    metrics by row label."""
    from carsdepo_assets.detection.backends import predict_records, with_operating_points
    from carsdepo_assets.detection.data import CocoSplit, load_split

    val = load_split(CocoSplit(*dataset.val), require_every_class=False)
    detector.config = detector.config.replace(score_calibration=())  # the model's own scores
    raw_predictions = predict_records(detector, val)
    variant = report.get("variant") or report["preset"]
    rows = {}
    for precision in precisions:
        detector.config = detector.config.replace(operating_precision=precision)
        points = with_operating_points(detector, val, raw_predictions)
        label = f"operating points at val precision {precision:g}"
        rows[label] = evaluate_test_split(detector, dataset)
        chosen = ", ".join(f"{point.label} {point.raw_threshold:.3f} (val P "
                           f"{point.precision:.2f} R {point.recall:.2f})"
                           for point in points.values())
        data = (f"lensor test split, {report['test_images']} photos; the {variant} model with "
                f"each class's operating point chosen on val for precision >= {precision:g}: "
                f"{chosen}")
        record_test_metrics(rows[label], data, backend=report["backend"],
                            preset=report["preset"], model_version=report["model_version"],
                            variant=f"{variant} + {label}")
    return rows


def seed_table(by_variant: dict[str, list[dict]]) -> str:
    """Markdown: each variant's mean and (min-max) over its seeds, per figure."""
    columns = [(header, key) for header, key in TABLE_COLUMNS if key != "ms_per_image"]
    lines = ["| variant | seeds | " + " | ".join(h for h, _ in columns) + " |",
             "|---|---" + "|---" * len(columns) + "|"]
    for variant, runs in by_variant.items():
        cells = []
        for _, key in columns:
            values = [run[key] for run in runs if run.get(key) is not None]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
                         if values else "-")
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def record_resized(detector, dataset, report: dict, sizes: list[int]) -> None:
    """The trained model evaluated at other input sizes (test-time resizing, no retraining):
    how much does input resolution limit it? Changes ``detector.config``: call it last."""
    trained_at = detector.config.max_size
    for size in sizes:
        detector.config = detector.config.replace(min_size=size, max_size=size)
        metrics = evaluate_test_split(detector, dataset)
        data = (f"lensor test split, {report['test_images']} photos; the {report['preset']} model "
                f"(trained at {trained_at} px) resized to {size} px at test time")
        record_test_metrics(metrics, data, backend=report["backend"], variant=f"eval {size}px",
                            model_version=report["model_version"])


def record_reevaluated(detector, dataset, report: dict) -> None:
    """The trained model evaluated again on the test split by this checkout's prediction path
    (its own settings): for a model trained before a change to prediction (merging, tiles)."""
    metrics = evaluate_test_split(detector, dataset)
    data = (f"lensor test split, {report['test_images']} photos; the {report['preset']} model "
            "as trained, evaluated again with this checkout's prediction code")
    variant = f"{report.get('variant') or report['preset']}, re-evaluated"
    record_test_metrics(metrics, data, backend=report["backend"], preset=report["preset"],
                        variant=variant, model_version=report["model_version"])
    print(table_markdown({variant: metrics}))


def load_report_dataset(report: dict):
    from carsdepo_assets.datasets import load_dataset

    return load_dataset(Path(report["dataset"]))


def evaluate_test_split(detector, dataset) -> dict:
    """Test-split metrics (as the evaluation report computes them) and ``ms_per_image``."""
    from carsdepo_assets.detection.evaluate import evaluate_on_split

    result, _, ms_per_image = evaluate_on_split(detector, dataset.coco("test"),
                                                dataset.image_root)
    return {**result.flat_metrics(), "ms_per_image": ms_per_image}


def record_test_metrics(metrics: dict, data: str, targets: dict[str, float] | None = None,
                        **extra) -> None:
    """One line per figure of FIGURES present in ``metrics`` (with its target, met or missed
    by how much, where ``targets`` has one) and the ms per photo."""
    for metric, name in FIGURES:
        if metric not in metrics:
            continue
        target = (targets or {}).get(metric)
        verdict = {} if target is None else {
            "target": target, "target_met": metrics[metric] >= target,
            "missed_by": round(max(0.0, target - metrics[metric]), 4)}
        unit = "AP" if "AP" in metric else "share"
        record(SUITE, name, round(metrics[metric], 4), unit, data, **extra, **verdict)
    if "ms_per_image" in metrics:  # sliced at native resolution where the config says so
        record(SUITE, "real_test_ms_per_image", round(metrics["ms_per_image"], 1), "ms/image",
               data, **extra)


def record_native_time(detector, dataset, report: dict, photos: int = 8) -> float:
    """Sliced prediction time of a 1600x1200 photo (lensor test photos enlarged to it: their
    content does not matter for the time, their size does), p50 over ``photos`` after one
    warm-up, in a process prepared as the inference paths prepare theirs."""
    from PIL import Image

    from carsdepo_assets.images.store import ImageStore
    from carsdepo_assets.prediction.runtime import prepare_inference_process

    threads = prepare_inference_process()
    store = ImageStore(dataset.image_root)
    times = []
    for entry in dataset.coco("test")["images"][:photos + 1]:
        photo = store.open(entry["sha256"]).convert("RGB").resize(
            NATIVE_PHOTO, Image.Resampling.BILINEAR)
        started = time.perf_counter()
        detector.predict([photo])
        times.append((time.perf_counter() - started) * 1000)
    p50 = statistics.median(times[1:])
    config = detector.config
    data = (f"{len(times) - 1} lensor test photos enlarged to {NATIVE_PHOTO[0]}x{NATIVE_PHOTO[1]},"
            f" one at a time, {threads} torch threads; the {report['preset']} model v"
            f"{report['model_version']}: whole-image pass at {config.max_size} px + "
            f"{config.crop_size} px tiles (work_side {config.work_side})")
    record(SUITE, "real_native_ms_per_photo_p50", round(p50, 1), "ms/photo", data,
           backend=report["backend"], preset=report["preset"],
           model_version=report["model_version"], target=NATIVE_MS_TARGET,
           target_met=p50 <= NATIVE_MS_TARGET)
    return p50


def record_train_speed(home: Path, iterations: int, malloc_default: bool) -> None:
    """Training speed alone (no validation) on the lensor train split of ``home``'s dataset,
    for the real_cpu design and the baseline: images/s over ``iterations`` after 5 warm-up
    ones. ``malloc_default`` leaves glibc's malloc as it is (the comparison for
    ``detection/memory.py``)."""
    from carsdepo_assets.datasets import load_dataset
    from carsdepo_assets.detection import backends
    from carsdepo_assets.detection.config import WITHOUT_CHANGE, DetectorConfig
    from carsdepo_assets.detection.data import CocoSplit

    if malloc_default:
        backends.keep_freed_memory = lambda: False
    dataset = load_dataset(Path(read_report(home)["dataset"]))
    for variant, overrides in (("all changes", {}), ("baseline", undone(WITHOUT_CHANGE))):
        seen = []
        config = DetectorConfig.preset("real_cpu", iterations=iterations + 5, **overrides)
        with tempfile.TemporaryDirectory(prefix="bench-real-speed-") as workdir:
            backends.train_detector(CocoSplit(*dataset.train), None, config, Path(workdir),
                                    seen.append)
        steady = seen[5:]
        # images/s of the iterations after the warm-up, from the cumulative figures reported
        busy = config.batch_size * (steady[-1].iteration / steady[-1].images_per_second
                                    - steady[0].iteration / steady[0].images_per_second)
        speed = (steady[-1].iteration - steady[0].iteration) * config.batch_size / busy
        record(SUITE, "real_train_images_per_s", round(speed, 2), "images/s",
               f"lensor train split, {iterations} iterations x {config.batch_size} after 5 "
               "warm-up, no validation; " + ("glibc malloc defaults" if malloc_default
                                             else "freed memory kept (detection/memory.py)"),
               variant=variant, malloc="default" if malloc_default else "keep_freed")


def load_model(home: Path, report: dict):
    from carsdepo_assets.detection.champion import configure_mlflow
    from carsdepo_assets.prediction.pyfunc import load_registered_detector
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME
    from carsdepo_assets.state import StateLayout

    configure_mlflow(StateLayout(home.resolve()))
    return load_registered_detector(f"models:/{DEFAULT_MODEL_NAME}/{report['model_version']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path,
                        help="CARSDEPO_HOME to train in and keep (default: a temporary one; "
                        "with --reuse: .carsdepo-real)")
    parser.add_argument("--reuse", action="store_true",
                        help="record the report already in --home instead of training")
    parser.add_argument("--variant",
                        help="with --reuse: the run that `carsdepo train-real --variant NAME` "
                        "reported (default: the last plain `make train-real`)")
    parser.add_argument("--data", help="the data set folder (default: train-real's)")
    parser.add_argument("--preset", default="auto",
                        help="auto | real_cpu | real_cpu_short | gpu")
    parser.add_argument("--ablation", action="store_true",
                        help="the small-damage design's ablation at real_cpu_short's budget, "
                        "one training after another in --home: the old design, all changes, "
                        "each change alone ('X only') and each left out ('all but X'); twelve "
                        "trainings of about 14 minutes each on two cores, per seed")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="with --ablation: only these variants (e.g. baseline "
                        "'all changes')")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="N",
                        help="with --ablation: train each variant once per seed and print each "
                        "variant's mean and range (three seeds are the unit of evidence)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="with --ablation: train every variant with this detector config "
                        "field changed too (repeatable), e.g. --set ema_decay=0.995")
    parser.add_argument("--evaluate-also", nargs="+", metavar="WAY",
                        choices=list(PREDICTION_VARIANTS),
                        help="with --ablation, or --reuse (then only these evaluations): "
                        "evaluate each model again predicting this way, the same weights, "
                        f"each its own row: {', '.join(map(repr, PREDICTION_VARIANTS))}")
    parser.add_argument("--operating-precisions", type=float, nargs="+", metavar="P",
                        help="with --ablation, or --reuse (then only these evaluations): "
                        "evaluate each model again with each "
                        "class's operating point chosen on val for each of these precisions "
                        "(operating_precision) and record each as its own row")
    parser.add_argument("--backend", default="auto", help="auto | torchvision | detectron2")
    parser.add_argument("--iterations", type=int, help="training iterations (preset's default)")
    parser.add_argument("--train-speed", type=int, metavar="ITERATIONS",
                        help="only measure training speed (no validation) over this many "
                        "iterations, in --home's dataset")
    parser.add_argument("--malloc-default", action="store_true",
                        help="with --train-speed: leave glibc's malloc settings as they are")
    parser.add_argument("--reevaluate", action="store_true",
                        help="with --reuse: also evaluate the model again with this checkout's "
                        "prediction code")
    parser.add_argument("--eval-sizes", type=int, nargs="+", default=[], metavar="PX",
                        help="also evaluate the trained model resized to these input sizes")
    args = parser.parse_args(argv)
    if args.train_speed:
        record_train_speed((args.home or DEFAULT_HOME).resolve(), args.train_speed,
                           args.malloc_default)
    elif args.ablation:
        run_ablation(args)
    elif args.reuse and (args.evaluate_also or args.operating_precisions):
        home = (args.home or DEFAULT_HOME).resolve()
        report = read_report(home, args.variant)
        again = evaluate_again(load_model(home, report), load_report_dataset(report), report,
                               args)
        print(table_markdown(again), flush=True)
    elif args.reuse:
        measure(args.home or DEFAULT_HOME, args.eval_sizes, args.reevaluate, args.variant)
    elif args.home:
        train(args.home.resolve(), args)
        measure(args.home, args.eval_sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-real-") as home:
            train(Path(home), args)
            measure(Path(home), args.eval_sizes)


def measure(home: Path, eval_sizes: list[int], reevaluate: bool = False,
            variant: str | None = None) -> None:
    report = read_report(home, variant)
    record_report(report)
    detector, dataset = load_model(home, report), load_report_dataset(report)
    if reevaluate:
        record_reevaluated(detector, dataset, report)
    record_native_time(detector, dataset, report)
    if eval_sizes:
        record_resized(detector, dataset, report, eval_sizes)


def read_report(home: Path, variant: str | None = None) -> dict:
    path = home.resolve() / "reports" / report_file(variant)
    if not path.is_file():
        raise SystemExit(f"no real-data report at {path}: run `make train-real` first")
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
