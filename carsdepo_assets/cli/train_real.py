"""``carsdepo train-real`` (``make train-real``): train and evaluate on real photos.

The lensor car-damage set (``../shared/data/lensor_car_damage``, COCO, CC BY 4.0) goes through
the same path as any labelled batch, so the run also proves that path on real data:

1. Label Studio starts; each published split is ingested as a batch (``lensor-train`` ...) and
   its boxes imported as completed annotations, pinned to that split (``import-coco
   --keep-splits``). ``*-broken`` boxes are not ours: such photos are left out, not counted
   as "None".
2. Four source photos of val are also in train (the data set's README). Val only selects the
   model, but the blocking leakage check would stop the dataset, so those val copies (and any
   test copy, though lensor's test has none) are not imported; the report lists them. Train
   also holds byte-identical copies (1,600 files, 967 distinct images): the image store keeps
   each image once.
3. ``dataset_job`` builds the curated dataset: train / val / test = the published splits.
4. ``carsdepo train``'s training (``cli.train``) runs with the ``real_cpu`` preset (``gpu``,
   the same design at a GPU's scale, where CUDA is there; the run says which and why) and
   evaluates on the published test split (76 photos). The quality gate decides as it always
   does; a real-data model below the gate stays a challenger.
5. ``reports/real_data.json`` under CARSDEPO_HOME keeps the test metrics, the config and the
   timings; ``benchmarks.bench_real`` records them as benchmark lines.

Run it in a state folder of its own (the Makefile uses ``.carsdepo-real``), so real and
synthetic photos never end up in one dataset.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carsdepo_assets.cli import train
from carsdepo_assets.cli.console import figure, progress_printer, say
from carsdepo_assets.cli.train import (
    TrainingError,
    add_training_options,
    parse_overrides,
    resolve_preset,
    train_on_curated_dataset,
)
from carsdepo_assets.fileio import atomic_write_json
from carsdepo_assets.state import PROJECT_ROOT, StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand
    from carsdepo_assets.resources.label_studio import LabelStudioResource

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "lensor_car_damage"
SPLITS = ("train", "val", "test")
BATCH_PREFIX = "lensor-"
REPORT_FILE = "real_data.json"


def report_file(variant: str | None = None) -> str:
    """``real_data.json``; a named variant's run (the ablation's) reports beside it, so that
    the report of the last `make train-real` is never overwritten by one."""
    if not variant:
        return REPORT_FILE
    slug = "".join(c if c.isalnum() else "-" for c in variant.lower()).strip("-")
    return f"real_data-{slug}.json"


class RealDataError(RuntimeError):
    """The real data set is missing or malformed, or a step failed; the message says which."""


@dataclass
class SplitImport:
    split: str
    images_in_file: int
    imported: dict[str, Any] = field(default_factory=dict)  # CocoImportReport.summary()
    dropped_for_leakage: list[str] = field(default_factory=list)


def split_paths(data_dir: Path, split: str) -> tuple[Path, Path]:
    """(images folder, COCO file) of a published split; a clear error when either is missing."""
    images = data_dir / "images" / split
    annotations = data_dir / "annotations" / f"instances_{split}.json"
    for path in (images, annotations):
        if not path.exists():
            raise RealDataError(
                f"{path} does not exist: expected the lensor layout images/<split>/ and "
                f"annotations/instances_<split>.json under {data_dir}"
            )
    return images, annotations


def import_published_splits(
    data_dir: Path, layout: StateLayout, label_studio: LabelStudioResource
) -> list[SplitImport]:
    """Ingest and import every published split, pinned to it (the test split into the verified
    test project); val and test copies of train photos are dropped (see the module docstring).
    Idempotent: a second run adds nothing."""
    from carsdepo_assets.cli.runner import ingest_batch_through_dagster
    from carsdepo_assets.labeling.coco_import import import_coco_annotations, parse_coco

    train_groups: set[str] = set()
    imports = []
    for split in SPLITS:
        images_dir, annotations = split_paths(data_dir, split)
        parsed = parse_coco(annotations, keep_split=split)
        outcome = SplitImport(split, images_in_file=len(parsed.images))
        if split == "train":
            train_groups = {image.group for image in parsed.images}
        else:
            outcome.dropped_for_leakage = sorted(
                image.file_name for image in parsed.images if image.group in train_groups
            )
            parsed.images = [image for image in parsed.images if image.group not in train_groups]
        batch = BATCH_PREFIX + split
        say(f"    {split}: ingesting {len(parsed.images)} photos as batch {batch}")
        manifest = ingest_batch_through_dagster(images_dir.resolve(), batch, layout)
        outcome.imported = import_coco_annotations(
            label_studio.for_split(split), layout, manifest, parsed,
            progress=progress_printer(f"    {split} import")
        ).summary()
        annotations_made = outcome.imported["annotations"]
        say(f"    {split}: {annotations_made['created']} annotations imported "
            f"({annotations_made['already_annotated']} there already), boxes "
            f"{outcome.imported['boxes_by_class']}, {outcome.imported['excluded_images']} photos "
            f"with only other damage left out, {len(outcome.dropped_for_leakage)} dropped as "
            "copies of train photos")
        imports.append(outcome)
    return imports


def preset_reason(asked: str, chosen: str) -> str:
    """Which preset trains and why, said before the hour-long run starts: ``auto`` decides by
    torch's view of CUDA, so a user sees whether the GPU was found."""
    if asked != "auto":
        return f"{chosen} (--preset {asked})"
    if chosen == "gpu":
        import torch

        return (f"gpu (--preset auto: torch sees CUDA, {torch.cuda.get_device_name()}): the "
                "small-damage design of real_cpu at a GPU's scale")
    return ("real_cpu (--preset auto: torch sees no CUDA device): the small-damage design on "
            "the CPU, about an hour on 2 cores")


def train_on_real_data(
    layout: StateLayout,
    data_dir: Path = DEFAULT_DATA_DIR,
    preset: str = "auto",
    backend: str = "auto",
    iterations: int | None = None,
    overrides: dict[str, Any] | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """The whole run (module docstring); returns and stores the report."""
    from carsdepo_assets.cli.runner import prepare_dagster_home, run_job, stored_asset_value
    from carsdepo_assets.labeling import server
    from carsdepo_assets.resources.label_studio import LabelStudioResource

    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise RealDataError(f"real data folder {data_dir} does not exist (--data)")
    layout = layout.ensure()
    prepare_dagster_home(layout)
    asked, preset = preset, resolve_preset(preset)
    say(f"==> Preset: {preset_reason(asked, preset)}")
    started = time.perf_counter()

    say(f"==> Label Studio for {layout.root}")
    say(f"    {server.start(layout).url}")
    say(f"==> Importing the published splits of {data_dir}")
    imports = import_published_splits(data_dir, layout, LabelStudioResource.from_env(layout))
    imported_s = time.perf_counter() - started

    say("==> Building the curated dataset (dataset_job)")
    run_job("dataset_job", layout)
    dataset_path = stored_asset_value(layout, "curated_dataset")

    say(f"==> Training ({preset} preset, backend {backend}) and evaluating on the test split")
    training_started = time.perf_counter()
    outcome = train_on_curated_dataset(layout, preset, backend, iterations, overrides)
    training_s = time.perf_counter() - training_started
    detector = outcome.detector
    report = {
        "data_dir": str(data_dir),
        "dataset": str(dataset_path),
        "dataset_version": outcome.dataset_version,
        "imports": [vars(split_import) for split_import in imports],
        "preset": preset,
        "overrides": overrides or {},
        "variant": variant,
        "config": detector.get("config"),
        "backend": detector.get("backend"),
        "model_version": outcome.version,
        "training_run_id": outcome.run_id,
        "train_wall_s": detector.get("train_wall_s"),
        "train_images_per_s": detector.get("train_images_per_s"),
        "train_iterations": detector.get("train_iterations"),
        "train_stopped_by": detector.get("train_stopped_by"),
        "operating_points": detector.get("operating_points") or {},
        "import_wall_s": round(imported_s, 1),
        "training_job_wall_s": round(training_s, 1),
        "test_images": outcome.test_images,
        "test_metrics": outcome.metrics,
        "promoted": outcome.promoted,
        "gate": outcome.gate_reasons,
    }
    path = layout.report_path(report_file(variant))
    atomic_write_json(path, report)
    say(format_report(report))
    say(f"\nreport: {path} (the benchmark `python -m benchmarks.bench_real` records it)")
    return report


# The ablation table's columns (issue 12): header -> report metric.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("AP50", "AP50"), ("AP", "AP"), ("scratch AP50", "AP50_scratch"),
    ("dent AP50", "AP50_dent"), ("damage AP50", "damage_AP50"), ("APs", "APs"),
    ("precision", "precision"), ("recall", "recall"), ('"None" acc.', "none_accuracy"),
    ("ms/photo", "ms_per_image"),
)


def table_markdown(rows: dict[str, dict[str, Any]]) -> str:
    """One markdown row per run (name -> test metrics) in the ablation table's columns."""
    lines = ["| run | " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |",
             "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, metrics in rows.items():
        cells = [f"{metrics[key]:.0f}" if key == "ms_per_image" and metrics.get(key) is not None
                 else figure(metrics.get(key)) for _, key in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# issue 12's targets for `make train-real` (the real_cpu preset, <= 60 min on 2 CPU cores)
TARGETS: dict[str, float] = {"AP50": 0.15, "AP50_scratch": 0.15, "AP50_dent": 0.10,
                             "damage_AP50": 0.25}


def target_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per target: the figure, and met or missed by how much."""
    lines = []
    for metric, target in TARGETS.items():
        value = metrics.get(metric, 0.0)
        verdict = "met" if value >= target else f"missed by {target - value:.3f}"
        lines.append(f"    {metric} {value:.3f} (target >= {target:.2f}): {verdict}")
    return lines


def _stopped_by(report: dict[str, Any]) -> str:
    """", N iterations (its time budget)" when the budget ended training, else ""."""
    if report.get("train_stopped_by") != "time budget":
        return ""
    return f", {report.get('train_iterations')} iterations (its time budget)"


def format_report(report: dict[str, Any]) -> str:
    metrics = report["test_metrics"]
    lines = [f"\nreal test split ({report['test_images']} photos), model v"
             f"{report['model_version']} ({report['backend']}, {report['preset']} preset"
             + (f" with {report['overrides']}" if report.get("overrides") else "")
             + f", trained in {report['train_wall_s']} s at {report['train_images_per_s']} "
             "images/s" + _stopped_by(report) + ")", "",
             table_markdown({report.get("variant") or report["preset"]: metrics}), ""]
    if report.get("operating_points"):
        lines += [operating_points_line(report), ""]
    if report["preset"] == "real_cpu" and not report.get("overrides"):
        lines += ["targets of issue 12:", *target_lines(metrics), ""]
    gate = f" ({report['gate']})" if report.get("gate") else ""
    lines.append(f"    promoted to champion{gate}" if report["promoted"]
                 else f"    stays a challenger: the quality gate did not pass{gate}")
    return "\n".join(lines)


def operating_points_line(report: dict[str, Any]) -> str:
    """Where each class operates (chosen on val) and what that gave there; precision and
    recall in the table are the test split's at these points."""
    target = (report.get("config") or {}).get("operating_precision")
    points = ", ".join(
        f"{label} from raw score {point['raw_threshold']:.2f} (val precision "
        f"{point['precision']:.2f}, recall {point['recall']:.2f}"
        + ("" if point["reached"] else ", the target not reached: best F1") + ")"
        for label, point in report["operating_points"].items())
    return f"    operating points, chosen on val for precision >= {target:g}: {points}"


def cmd_train_real(args: argparse.Namespace, layout: StateLayout) -> int:
    from carsdepo_assets.cli.runner import RunFailed
    from carsdepo_assets.detection.config import ConfigError
    from carsdepo_assets.labeling.coco_import import CocoImportError
    from carsdepo_assets.labeling.server import ServerError

    try:
        train_on_real_data(layout, Path(args.data), preset=args.preset, backend=args.backend,
                           iterations=args.iterations, overrides=parse_overrides(args.set),
                           variant=args.variant)
    except (RealDataError, TrainingError, CocoImportError, ConfigError, ServerError,
            RunFailed) as error:
        print(f"carsdepo train-real: {error}", file=sys.stderr)
        return 1
    return 0


def register(command: AddCommand) -> None:
    """``train`` (the user's own data) and, after it, its lensor example ``train-real``."""
    train.register(command)
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
    add_training_options(
        train_real, "auto", "detector preset (default auto: gpu where torch sees CUDA, else "
        "real_cpu; both train the small-damage design, gpu with larger crops and batches and "
        "a longer schedule, not yet measured on a GPU)")
    train_real.add_argument(
        "--iterations", type=int, help="training iterations (default: the preset's)"
    )
    train_real.add_argument(
        "--variant", help="a name for this run in the report's table (default: the preset)"
    )
