"""Ingestion and profiling stream a batch: their peak memory does not grow with the batch.

Measured as benchmarks/bench_memory.py does (resident memory of a fresh interpreter, its peak
reset after a warm-up), on a small and a six times larger batch. Holding the larger batch's
decoded photos would take 30 x 0.9 MiB more; streaming keeps the difference near zero.
(Prediction streams the same way, in chunks; it is measured by `make bench` only, as a model
on 36 images is too slow for the suite.)
"""

from __future__ import annotations

import os

import pytest

from benchmarks.bench_memory import measure_stage, prepare_batch

SMALL, LARGE = 6, 36
SIZE = (640, 480)
ONE_DECODED_PHOTO_MIB = SIZE[0] * SIZE[1] * 3 / 2**20
ALLOWED_EXTRA_MIB = 8.0  # well under the ~27 MiB the extra photos would take if held


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    return {count: prepare_batch(tmp_path_factory.mktemp(f"batch-{count}"), count, SIZE)
            for count in (SMALL, LARGE)}


@pytest.mark.parametrize("stage", ["ingest", "profile"])
def test_peak_memory_does_not_grow_with_the_batch(stage, batches, tmp_path):
    growth = {}
    for count, home in batches.items():
        if stage == "ingest":  # ingest the same photos again, into an empty store
            work = tmp_path / f"ingest-{count}"
            (work / "source").mkdir(parents=True)
            for photo in (home.parent / "source").iterdir():  # hard links: regular files
                os.link(photo, work / "source" / photo.name)
            home = work / "home"
        growth[count] = measure_stage(stage, home, "bench")["growth_mib"]

    assert (LARGE - SMALL) * ONE_DECODED_PHOTO_MIB > 3 * ALLOWED_EXTRA_MIB
    assert growth[LARGE] - growth[SMALL] < ALLOWED_EXTRA_MIB, growth
