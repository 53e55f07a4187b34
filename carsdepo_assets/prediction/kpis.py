"""Business KPIs computed from the platform's own records, with a markdown dashboard and plots.

Records read (all under CARSDEPO_HOME; a missing one leaves its KPIs empty, with a note):

- ``manifests/*.json``: the images the platform holds (distinct stored images of all batches);
- ``predictions/*.jsonl``: each batch's latest batch predictions;
- the latest annotation snapshot (``annotations/LATEST``): what people labelled;
- ``inference_log/``: every answer's latency (batch, cli, rest), over a window of days;
- ``reports/decisions/*.json``: the monitoring stage's retraining decisions, each a JSON object
  with an ``action`` (``monitoring.decision.Decision.to_dict()``);
- the MLflow registry: champion promotions and rollbacks (version tags
  ``carsdepo.promoted_at``, ``carsdepo.rolled_back_at``) and the test metrics ``test_AP`` /
  ``test_AP50`` that evaluation_report logged in the version's run.

Definitions:

- **automation rate** = decided by the model / (decided by the model + sent to annotators).
  An image is *decided by the model* when the champion answered it in batch predictions and no
  person labelled it: its answer stands alone. It is *sent to annotators* when a person
  labelled it in Label Studio (snapshot source ``label_studio``), whether or not the model
  answered it first. Images that arrived labelled (``import-coco``) count as neither; images
  neither answered nor labelled yet are *pending*.
- **labelled share** = labelled images (any source) / distinct images held.
- **damage-type distribution**: images per answer kind (None, scratch, dent, scratch+dent) and
  boxes per class, for the model's answers and for people's labels.
- **annotation throughput**: images labelled in Label Studio per UTC day of the winning
  annotation's last update (imported labels are not annotators' work).
- **champion AP over time**: the test AP and AP50 of each champion, from the time it became
  champion (promoted, or restored by a rollback).
- **inference latency p50/p95**: model milliseconds per image, per source and overall.
- **drift alerts**: decisions whose action is ``retrain`` or ``experiment``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from carsdepo_assets.detection.champion import (
    PROMOTED_AT_TAG,
    ROLLED_BACK_AT_TAG,
    current_champion,
)
from carsdepo_assets.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.labeling.history import load_latest_snapshot
from carsdepo_assets.labeling.results import SOURCE_LABEL_STUDIO, parse_timestamp
from carsdepo_assets.labeling.snapshot import LabeledImage
from carsdepo_assets.prediction.batch import read_predictions
from carsdepo_assets.prediction.inference_log import SOURCES, InferenceLog
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import CLASS_NAMES, DENT, NONE_ANSWER, SCRATCH
from carsdepo_assets.visual import histogram_png, label_colour, png_bytes

ANSWER_KINDS = (NONE_ANSWER, SCRATCH, DENT, f"{SCRATCH}+{DENT}")
ALERT_ACTIONS = ("retrain", "experiment")
CHAMPION_METRICS = ("AP50", "AP")  # read as test_<name> from the version's run
DEFAULT_LATENCY_DAYS = 30


def answer_kind(labels: Iterable[str]) -> str:
    """The kind of an answer from its box labels: "None" when there is none."""
    present = [name for name in CLASS_NAMES if name in set(labels)]
    return "+".join(present) if present else NONE_ANSWER


def predicted_labels(damage: str | list[dict]) -> list[str]:
    return [] if damage == NONE_ANSWER else [detection["label"] for detection in damage]


@dataclass(frozen=True)
class LatencyStats:
    count: int
    p50_ms: float
    p95_ms: float

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencyStats:
        p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
        return cls(len(values), round(float(p50), 2), round(float(p95), 2))


@dataclass(frozen=True)
class ChampionPoint:
    """A version's time as champion: since when, its test metrics (those its run has), and
    whether a rollback restored it rather than a promotion."""

    version: str
    since: str
    metrics: dict[str, float]
    restored: bool = False


@dataclass
class Distribution:
    """Images per answer kind and boxes per class."""

    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANSWER_KINDS, 0))
    boxes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))

    def add(self, labels: Sequence[str]) -> None:
        self.images[answer_kind(labels)] += 1
        for label in labels:
            self.boxes[label] += 1

    def describe(self) -> str:
        kinds = " · ".join(f"{kind} {count}" for kind, count in self.images.items())
        boxes = ", ".join(f"{count} {name}" for name, count in self.boxes.items())
        return f"{kinds} (boxes: {boxes})"


@dataclass
class KpiReport:
    """The KPIs (see the module docstring for definitions) and what they were computed from."""

    images_held: int
    labelled: int
    decided_by_model: int
    sent_to_annotators: int
    pending: int
    model_answers: Distribution
    labels: Distribution
    annotations_per_day: dict[str, int]
    latencies_ms: dict[str, list[float]]
    champions: list[ChampionPoint]
    decisions: dict[str, int]
    latency_days: int
    notes: list[str] = field(default_factory=list)

    @property
    def automation_rate(self) -> float | None:
        decided = self.decided_by_model + self.sent_to_annotators
        return self.decided_by_model / decided if decided else None

    @property
    def labelled_share(self) -> float | None:
        return self.labelled / self.images_held if self.images_held else None

    @property
    def annotations_per_active_day(self) -> float | None:
        days = self.annotations_per_day
        return sum(days.values()) / len(days) if days else None

    @property
    def latency(self) -> dict[str, LatencyStats]:
        """p50/p95 per source, and over all sources as ``all``."""
        stats = {source: LatencyStats.of(values)
                 for source, values in self.latencies_ms.items() if values}
        everything = [value for values in self.latencies_ms.values() for value in values]
        if everything:
            stats["all"] = LatencyStats.of(everything)
        return stats

    @property
    def drift_alerts(self) -> int:
        return sum(self.decisions.get(action, 0) for action in ALERT_ACTIONS)

    def headline(self) -> dict[str, float | int | None]:
        """The numbers worth tracking over time (run metadata, MLflow)."""
        latency = self.latency.get("all")
        champion = self.champions[-1] if self.champions else None
        return {
            "automation_rate": _rounded(self.automation_rate),
            "labelled_share": _rounded(self.labelled_share),
            "images_held": self.images_held,
            "images_labelled": self.labelled,
            "images_decided_by_model": self.decided_by_model,
            "images_sent_to_annotators": self.sent_to_annotators,
            "annotations_per_active_day": _rounded(self.annotations_per_active_day),
            "champion_AP50": champion.metrics.get("AP50") if champion else None,
            "champion_AP": champion.metrics.get("AP") if champion else None,
            "latency_p50_ms": latency.p50_ms if latency else None,
            "latency_p95_ms": latency.p95_ms if latency else None,
            "drift_alerts": self.drift_alerts,
        }

    def to_dict(self) -> dict:
        return {
            "headline": self.headline(),
            "pending": self.pending,
            "model_answers": asdict(self.model_answers),
            "labels": asdict(self.labels),
            "annotations_per_day": self.annotations_per_day,
            "latency": {source: asdict(stats) for source, stats in self.latency.items()},
            "latency_days": self.latency_days,
            "champions": [asdict(point) for point in self.champions],
            "decisions": self.decisions,
            "notes": self.notes,
        }

    def markdown(self) -> str:
        """The dashboard's table, one row per KPI, then the notes."""
        rows = [
            ("Automation rate", _share(self.automation_rate),
             f"{self.decided_by_model} decided by the model, {self.sent_to_annotators} sent to "
             f"annotators, {self.pending} pending"),
            ("Labelled share", _share(self.labelled_share),
             f"{self.labelled} of {self.images_held} images held"),
            ("Damage types (model)", str(sum(self.model_answers.images.values())),
             self.model_answers.describe()),
            ("Damage types (annotators)", str(sum(self.labels.images.values())),
             self.labels.describe()),
            ("Annotation throughput", _number(self.annotations_per_active_day, " images/day"),
             f"{sum(self.annotations_per_day.values())} images over "
             f"{len(self.annotations_per_day)} active days"),
            ("Champion AP50", _number(self.headline()["champion_AP50"]), self._champion_detail()),
            ("Inference latency p50 / p95", self._latency_value(), self._latency_detail()),
            ("Drift alerts", str(self.drift_alerts),
             ", ".join(f"{action} {count}" for action, count in self.decisions.items())
             or "no decisions recorded"),
        ]
        lines = ["| KPI | value | detail |", "|---|---:|---|"]
        lines += [f"| {name} | {value} | {detail} |" for name, value, detail in rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines)

    def _champion_detail(self) -> str:
        if not self.champions:
            return "no champion promoted yet"
        last = self.champions[-1]
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in last.metrics.items()) or "no test metrics"
        how = "restored" if last.restored else "promoted"
        return (f"v{last.version} {how} {last.since} ({metrics}); "
                f"{len(self.champions)} champions so far")

    def _latency_value(self) -> str:
        overall = self.latency.get("all")
        return f"{overall.p50_ms:.0f} / {overall.p95_ms:.0f} ms" if overall else "n/a"

    def _latency_detail(self) -> str:
        parts = [f"{source}: {stats.p50_ms:.0f} / {stats.p95_ms:.0f} ms ({stats.count})"
                 for source, stats in self.latency.items() if source != "all"]
        return (", ".join(parts) or "no answers recorded") + f"; last {self.latency_days} days"


def collect_kpis(
    layout: StateLayout,
    model_name: str | None = None,
    *,
    latency_days: int = DEFAULT_LATENCY_DAYS,
    today: date | None = None,
) -> KpiReport:
    """Read the records under ``layout`` (and, with ``model_name``, the registry; MLflow must
    be configured) and compute the KPIs."""
    notes: list[str] = []
    held = _images_held(layout, notes)
    answers = _latest_answers(layout, notes)
    model_answers = Distribution()
    for damage in answers.values():
        model_answers.add(predicted_labels(damage))
    snapshot = load_latest_snapshot(layout.annotations)
    images = snapshot.images if snapshot is not None else []
    if snapshot is None:
        notes.append("no annotation snapshot yet: nothing labelled")
    labels = Distribution()
    for image in images:
        labels.add([box.label for box in image.boxes])
    by_people = {image.sha256 for image in images if image.source == SOURCE_LABEL_STUDIO}
    labelled = {image.sha256 for image in images}
    since = (today or datetime.now(UTC).date()) - timedelta(days=latency_days - 1)
    return KpiReport(
        images_held=len(held),
        labelled=len(labelled),
        decided_by_model=len(set(answers) - labelled),
        sent_to_annotators=len(by_people),
        pending=len(held - set(answers) - labelled),
        model_answers=model_answers,
        labels=labels,
        annotations_per_day=annotations_per_day(images),
        latencies_ms=_latencies(InferenceLog(layout.inference_log), since, notes),
        champions=champion_history(model_name) if model_name else [],
        decisions=_decisions(layout.decisions, notes),
        latency_days=latency_days,
        notes=notes,
    )


def annotations_per_day(images: Iterable[LabeledImage]) -> dict[str, int]:
    """Images labelled in Label Studio per UTC day of their annotation's last update."""
    days: Counter[str] = Counter()
    for image in images:
        updated = parse_timestamp(image.updated_at)
        if image.source == SOURCE_LABEL_STUDIO and updated is not None:
            days[updated.astimezone(UTC).date().isoformat()] += 1
    return dict(sorted(days.items()))


def champion_history(model_name: str) -> list[ChampionPoint]:
    """Every promotion of ``model_name``, oldest first, with the version's test metrics; after
    a rollback, the restored champion once more at the end."""
    client = MlflowClient()
    points, rolled_back = [], {}
    for version in client.search_model_versions(f"name = '{model_name}'"):
        promoted_at = version.tags.get(PROMOTED_AT_TAG)
        if not promoted_at:
            continue
        run_metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        metrics = {name: round(run_metrics[f"test_{name}"], 4)
                   for name in CHAMPION_METRICS if f"test_{name}" in run_metrics}
        points.append(ChampionPoint(str(version.version), promoted_at, metrics))
        rolled_back[str(version.version)] = version.tags.get(ROLLED_BACK_AT_TAG)
    # promotion times have whole seconds: within one second, the later version came later
    points.sort(key=lambda point: (point.since, int(point.version)))
    champion = current_champion(model_name)
    earlier = [point for point in points if point.version == champion]
    if earlier and points[-1].version != champion:
        since = rolled_back[points[-1].version] or points[-1].since
        points.append(ChampionPoint(champion, since, earlier[-1].metrics, restored=True))
    return points


def kpi_plots(report: KpiReport) -> dict[str, bytes]:
    """PNG plots for the dashboard, by name."""
    return {
        "damage_types": _distribution_png(report),
        "annotation_throughput": _throughput_png(report.annotations_per_day),
        "champion_ap": _champion_png(report.champions),
        "inference_latency": histogram_png(
            report.latencies_ms, bins=20, xlabel="ms per image",
            title=f"Inference latency, last {report.latency_days} days",
        ),
    }


def save_report(report: KpiReport, plots: Mapping[str, bytes], folder: Path) -> Path:
    """Write ``kpis.json``, the plots and ``dashboard.md`` (showing them) into ``folder``."""
    for name, png in plots.items():
        atomic_write_bytes(folder / f"{name}.png", png)
    atomic_write_json(folder / "kpis.json", report.to_dict())
    pictures = "\n\n".join(f"![{name}]({name}.png)" for name in plots)
    atomic_write_text(folder / "dashboard.md", f"# carsdepo KPIs\n\n{report.markdown()}\n\n"
                                               f"{pictures}\n")
    return folder / "dashboard.md"


def _images_held(layout: StateLayout, notes: list[str]) -> set[str]:
    held: set[str] = set()
    for path in sorted(layout.manifests.glob("*.json")):
        try:
            held.update(BatchManifest.load(path).image_hashes())
        except (ValueError, KeyError, TypeError) as error:
            notes.append(f"manifest {path.name} skipped: {type(error).__name__}: {error}")
    if not held:
        notes.append("no stored images yet (no batch manifest)")
    return held


def _latest_answers(layout: StateLayout, notes: list[str]) -> dict[str, str | list[dict]]:
    """The model's answer per image sha256 over every batch's predictions file."""
    answers: dict[str, str | list[dict]] = {}
    for path in sorted(layout.predictions.glob("*.jsonl")):
        try:
            for row in read_predictions(path):
                if "damage" in row:
                    answers[row["sha256"]] = row["damage"]
        except (ValueError, KeyError) as error:
            notes.append(f"predictions {path.name} partly skipped: {error}")
    if not answers:
        notes.append("no batch predictions yet")
    return answers


def _latencies(log: InferenceLog, since: date, notes: list[str]) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {source: [] for source in SOURCES}
    bad: list[str] = []
    for record in log.read(since, on_bad_line=lambda path, n, _: bad.append(f"{path.name}:{n}")):
        if record.error is None:
            latencies[record.source].append(record.latency_ms)
    if bad:
        notes.append(f"{len(bad)} unreadable inference log lines skipped ({', '.join(bad[:3])})")
    return latencies


def _decisions(folder: Path, notes: list[str]) -> dict[str, int]:
    actions: Counter[str] = Counter()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            actions[str(json.loads(path.read_text())["action"])] += 1
        except (ValueError, KeyError, TypeError) as error:
            notes.append(f"decision {path.name} skipped: {type(error).__name__}: {error}")
    if not folder.is_dir():
        notes.append(f"no retraining decisions recorded yet ({folder.name}/ is absent)")
    return dict(sorted(actions.items()))


def _distribution_png(report: KpiReport) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    positions = np.arange(len(ANSWER_KINDS))
    for offset, (who, counts) in enumerate((("model", report.model_answers.images),
                                            ("annotators", report.labels.images))):
        axes.bar(positions + (offset - 0.5) * 0.4, [counts[kind] for kind in ANSWER_KINDS],
                 width=0.4, label=who, color=("#4c72b0", "#dd8452")[offset])
    axes.set_xticks(positions, ANSWER_KINDS)
    axes.set_ylabel("images")
    axes.set_title("Damage types")
    axes.legend()
    return png_bytes(figure)


def _throughput_png(counts: Mapping[str, int]) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    if counts:
        axes.bar(list(counts), list(counts.values()), color=tuple(
            c / 255 for c in label_colour(SCRATCH)))
        axes.tick_params(axis="x", labelrotation=45)
    else:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    axes.set_title("Images labelled in Label Studio per day")
    axes.set_ylabel("images")
    return png_bytes(figure)


def _champion_png(points: Sequence[ChampionPoint]) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    if points:
        steps = range(len(points))
        for name in CHAMPION_METRICS:
            axes.plot(steps, [point.metrics.get(name, np.nan) for point in points],
                      marker="o", label=f"test {name}")
        axes.set_xticks(list(steps), [
            f"v{point.version}{' restored' if point.restored else ''}\n{point.since[:10]}"
            for point in points])
        axes.set_ylim(0, 1)
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no champion yet", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_title("Champion AP over time")
    return png_bytes(figure)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3g}{unit}"
