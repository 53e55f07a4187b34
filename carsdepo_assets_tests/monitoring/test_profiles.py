"""whylogs profiles: streamed in chunks, stored and read back, summarised for the UI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from carsdepo_assets.monitoring.profiles import (
    profile_rows,
    profile_summary,
    read_profile,
    row_count,
    summary_table,
    write_profile,
)

VALUES = np.random.default_rng(0).normal(0.5, 0.1, size=500)


def _rows():
    return ({"brightness_mean": float(value), "width": 640} for value in VALUES)


def test_summary_matches_the_data() -> None:
    summary = profile_summary(profile_rows(_rows()))
    brightness = summary["brightness_mean"]
    assert brightness["count"] == len(VALUES)
    assert brightness["mean"] == pytest.approx(VALUES.mean())
    assert brightness["std"] == pytest.approx(VALUES.std(ddof=1), rel=1e-6)
    assert (brightness["min"], brightness["max"]) == (VALUES.min(), VALUES.max())
    assert brightness["median"] == pytest.approx(np.median(VALUES), abs=0.01)
    assert summary["width"]["std"] == 0.0


def test_small_chunks_give_the_same_profile_as_one_chunk() -> None:
    """Chunking bounds memory; it must not change what the profile says."""
    chunked = profile_summary(profile_rows(_rows(), chunk_size=7))
    whole = profile_summary(profile_rows(_rows(), chunk_size=10_000))
    assert chunked.keys() == whole.keys()
    for feature, stats in whole.items():
        for name in ("count", "mean", "std", "min", "max"):
            assert chunked[feature][name] == pytest.approx(stats[name], rel=1e-9)
        for name in ("p25", "median", "p75"):  # KLL sketches: quantiles within sketch error
            assert chunked[feature][name] == pytest.approx(stats[name], abs=0.02)


def test_a_profile_survives_writing_and_reading(tmp_path: Path) -> None:
    view = profile_rows(_rows())
    path = tmp_path / "profiles" / "batch-1.bin"
    write_profile(view, path)
    assert profile_summary(read_profile(path)) == profile_summary(view)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_nan_values_are_counted_apart_from_the_distribution() -> None:
    view = profile_rows([{"mean_score": 0.8}, {"mean_score": math.nan}, {"mean_score": 0.6}])
    assert row_count(view) == 3
    assert profile_summary(view)["mean_score"]["count"] == 2
    assert profile_summary(view)["mean_score"]["mean"] == pytest.approx(0.7)


def test_no_rows_give_an_empty_profile() -> None:
    view = profile_rows(iter(()))
    assert row_count(view) == 0
    assert "Empty profile" in summary_table(view)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"a": 1.0}, {"a": "bright"}], r"row 1, feature 'a': 'bright' is not a number"),
        ([{"a": 1.0}, {"a": None}], r"row 1, feature 'a': None is not a number"),
        ([{"a": 1.0}, {"b": 2.0}], r"row 1 has different features.*missing \['a'\].*extra \['b'\]"),
        ([{"a": 1.0}, [1.0]], r"row 1 is a list"),
        ([{}], r"row 0 has no features"),
    ],
)
def test_a_bad_row_is_named_in_the_error(rows, message) -> None:
    with pytest.raises(ValueError, match=message):
        profile_rows(rows)


def test_reading_a_missing_or_foreign_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no whylogs profile at .*absent.bin"):
        read_profile(tmp_path / "absent.bin")
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"GIF89a definitely not a profile")
    with pytest.raises(ValueError, match="foreign.bin is not a readable whylogs profile"):
        read_profile(foreign)


def test_summary_table_has_a_row_per_feature_with_every_statistic() -> None:
    table = summary_table(profile_rows(_rows()))
    header, rule, *body = table.splitlines()
    assert header == "| feature | count | mean | std | min | p25 | median | p75 | max |"
    assert [line.split("|")[1].strip() for line in body] == ["brightness_mean", "width"]
    assert body[1].split("|")[2].strip() == "500"
