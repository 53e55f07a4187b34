"""The KPIs from the records ``collect`` read: a ``KpiReport`` (definitions: the package
docstring)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC

import numpy as np

from carsdepo_assets.labeling.results import SOURCE_LABEL_STUDIO, parse_timestamp
from carsdepo_assets.labeling.snapshot import LabeledImage
from carsdepo_assets.taxonomy import CLASS_NAMES, DENT, NONE_ANSWER, SCRATCH

ANSWER_KINDS = (NONE_ANSWER, SCRATCH, DENT, f"{SCRATCH}+{DENT}")
ALERT_ACTIONS = ("retrain", "experiment")
CHAMPION_METRICS = ("AP50", "AP")  # read as test_<name> from the version's run


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

def compute_kpis(
    held: set[str],
    answers: Mapping[str, str | list[dict]],
    labelled_images: Sequence[LabeledImage],
    latencies_ms: dict[str, list[float]],
    champions: list[ChampionPoint],
    decisions: dict[str, int],
    latency_days: int,
    notes: list[str],
) -> KpiReport:
    """The KPIs of the records ``collect`` read (definitions: the package docstring)."""
    model_answers = Distribution()
    for damage in answers.values():
        model_answers.add(predicted_labels(damage))
    labels = Distribution()
    for image in labelled_images:
        labels.add([box.label for box in image.boxes])
    by_people = {image.sha256 for image in labelled_images
                 if image.source == SOURCE_LABEL_STUDIO}
    labelled = {image.sha256 for image in labelled_images}
    return KpiReport(
        images_held=len(held),
        labelled=len(labelled),
        decided_by_model=len(set(answers) - labelled),
        sent_to_annotators=len(by_people),
        pending=len(held - set(answers) - labelled),
        model_answers=model_answers,
        labels=labels,
        annotations_per_day=annotations_per_day(labelled_images),
        latencies_ms=latencies_ms,
        champions=champions,
        decisions=decisions,
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


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
