"""whylogs profiles of feature rows: built in bounded memory, stored as whylogs binary.

A profile is whylogs' mergeable summary of a dataset (counts and a KLL quantile sketch per
feature), so a batch of any size costs the same memory to profile and to keep. Rows arrive one
by one (typically from :func:`carsdepo_assets.monitoring.features.iter_image_features`) and are
logged in pandas chunks of ``chunk_size`` rows.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from carsdepo_assets.monitoring.whylogs_compat import DatasetProfileView

# whylogs and pandas are imported by the functions that use them: the Dagster code location
# imports this module (through drift.py) and must load without them.

DEFAULT_CHUNK_SIZE = 256
SUMMARY_STATISTICS: tuple[tuple[str, str], ...] = (
    ("count", "n"),
    ("mean", "mean"),
    ("std", "stddev"),
    ("min", "min"),
    ("p25", "q_25"),
    ("median", "median"),
    ("p75", "q_75"),
    ("max", "max"),
)


def profile_rows(
    rows: Iterable[Mapping[str, float]], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> DatasetProfileView:
    """Profile numeric feature rows; every row must have the first row's features.

    A value may be NaN (counted apart by whylogs, e.g. ``mean_score`` of an image without
    detections); anything that is not a real number raises ``ValueError`` naming row and feature.
    No rows give an empty profile, which the drift report recognises and reports as such.
    """
    import pandas as pd

    from carsdepo_assets.monitoring.whylogs_compat import DatasetProfile

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    profile = DatasetProfile()
    features: tuple[str, ...] | None = None
    chunk: list[list[float]] = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {index} is a {type(row).__name__}, not a mapping of features")
        if features is None:
            features = tuple(row)
            if not features:
                raise ValueError("row 0 has no features to profile")
        chunk.append(_checked_values(index, row, features))
        if len(chunk) == chunk_size:
            profile.track(pandas=pd.DataFrame(chunk, columns=features, dtype="float64"))
            chunk = []
    if chunk:
        profile.track(pandas=pd.DataFrame(chunk, columns=features, dtype="float64"))
    return profile.view()


def row_count(view: DatasetProfileView) -> int:
    """How many rows the profile has seen (0 for an empty profile)."""
    counts = [column.get_metric("counts") for column in view.get_columns().values()]
    return max((int(metric.n.value) for metric in counts if metric is not None), default=0)


def write_profile(view: DatasetProfileView, path: Path) -> None:
    """Store ``view`` as whylogs binary, atomically (a reader never sees half a profile)."""
    atomic_write_bytes(Path(path), view.serialize())


def read_profile(path: Path) -> DatasetProfileView:
    """Load a profile written by :func:`write_profile`; a clear error when it is not one."""
    from carsdepo_assets.monitoring.whylogs_compat import DatasetProfileView

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no whylogs profile at {path}")
    try:
        return DatasetProfileView.deserialize(path.read_bytes())
    except Exception as error:  # whylogs raises its own and protobuf errors alike
        raise ValueError(f"{path} is not a readable whylogs profile: {error}") from error


def profile_summary(view: DatasetProfileView) -> dict[str, dict[str, float]]:
    """Per feature: count (non-NaN values), mean, std, min, p25, median, p75, max."""
    summary: dict[str, dict[str, float]] = {}
    for feature, column in sorted(view.get_columns().items()):
        distribution = column.get_metric("distribution")
        if distribution is None:
            continue
        stats = distribution.to_summary_dict()
        summary[feature] = {
            label: float(stats[key]) if stats.get(key) is not None else math.nan
            for label, key in SUMMARY_STATISTICS
        }
    return summary


def summary_table(view: DatasetProfileView) -> str:
    """The profile as a markdown table, one row per feature, for Dagster metadata."""
    summary = profile_summary(view)
    if not summary:
        return "_Empty profile: no rows were logged._"
    labels = [label for label, _ in SUMMARY_STATISTICS]
    lines = [
        "| feature | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for feature, stats in summary.items():
        cells = [f"{int(stats['count'])}"] + [format_number(stats[label]) for label in labels[1:]]
        lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_number(value: float) -> str:
    """Four significant digits; an empty distribution's NaN shows as a dash."""
    return "–" if math.isnan(value) else f"{value:.4g}"


def _checked_values(index: int, row: Mapping[str, float], features: tuple[str, ...]) -> list[float]:
    if row.keys() != set(features):
        missing = sorted(set(features) - set(row))
        extra = sorted(set(row) - set(features))
        raise ValueError(
            f"row {index} has different features than row 0: missing {missing}, extra {extra}"
        )
    values = []
    for feature in features:
        value = row[feature]
        if not isinstance(value, numbers.Real):
            raise ValueError(f"row {index}, feature {feature!r}: {value!r} is not a number")
        values.append(float(value))
    return values
