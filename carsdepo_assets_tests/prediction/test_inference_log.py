"""The inference log: append-only JSON lines that several processes write at once."""

from __future__ import annotations

import multiprocessing
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from carsdepo_assets.prediction.inference_log import BATCH, REST, InferenceLog, InferenceRecord

WRITERS, RECORDS_EACH = 3, 150


def record(n: int, source: str = REST, writer: int = 0) -> InferenceRecord:
    """A record with a long answer, so that lines are larger than one pipe buffer (4 KiB)."""
    boxes = [{"label": "scratch", "score": 0.9, "box": [n, writer, 100.0, 100.0]}] * 80
    return InferenceRecord(source=source, model_name="m", model_version="1",
                           image_sha256=f"{writer:02d}{n:062d}", latency_ms=float(n),
                           result=boxes)


def _write(folder: Path, writer: int) -> None:
    log = InferenceLog(folder)
    for n in range(RECORDS_EACH):
        log.append([record(n, writer=writer)])


def test_lines_from_concurrent_writer_processes_never_interleave(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write, args=(tmp_path, w)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
    bad: list = []

    found = list(InferenceLog(tmp_path).read(on_bad_line=lambda *line: bad.append(line)))

    assert [process.exitcode for process in writers] == [0] * WRITERS
    assert bad == []
    assert sorted(r.image_sha256 for r in found) == sorted(
        f"{w:02d}{n:062d}" for w in range(WRITERS) for n in range(RECORDS_EACH))


def test_a_torn_line_left_by_a_crash_is_skipped_and_reported(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path)
    log.append([record(1), record(2)])
    [day_file] = log.files()
    with day_file.open("a") as handle:  # what a writer killed mid-line leaves behind
        handle.write('{"source":"rest","model_name":"m","mod\n')
    log.append([record(3, source=BATCH)])
    bad: list = []

    found = list(log.read(on_bad_line=lambda path, number, reason: bad.append((path, number))))

    assert [(r.source, r.latency_ms) for r in found] == [(REST, 1.0), (REST, 2.0), (BATCH, 3.0)]
    assert bad == [(day_file, 3)]


def test_files_are_per_utc_day_and_a_reader_can_start_at_a_day(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path)
    log.append([record(1)])
    today = datetime.now(UTC).date()
    (tmp_path / "2020-01-01.jsonl").write_bytes(log.files()[0].read_bytes())

    assert [path.name for path in log.files()] == ["2020-01-01.jsonl", f"{today}.jsonl"]
    assert len(list(log.read())) == 2
    assert len(list(log.read(since=date(2021, 1, 1)))) == 1


def test_a_record_names_one_of_the_known_sources() -> None:
    with pytest.raises(ValueError, match="inference source 'email': expected one of"):
        InferenceRecord(source="email", model_name=None, model_version=None,
                        image_sha256=None, latency_ms=0.0, result=None)


def test_day_files_are_private_to_their_owner_even_one_made_readable_before(
    tmp_path: Path,
) -> None:
    """A record names what was answered and digests of images: the owner's only."""
    log = InferenceLog(tmp_path / "log")
    log.append([record(1)])
    [day_file] = log.files()
    created = stat.S_IMODE(day_file.stat().st_mode)
    day_file.chmod(0o644)  # as an earlier version left it

    log.append([record(2)])

    assert created == 0o600
    assert stat.S_IMODE(day_file.stat().st_mode) == 0o600
    assert len(list(log.read())) == 2
