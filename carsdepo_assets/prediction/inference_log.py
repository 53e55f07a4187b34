"""The inference log: one JSON line per answered image, append-only, under ``inference_log/``.

Every prediction made for someone is recorded: by ``batch_predictions`` (source ``batch``),
``carsdepo predict`` (``cli``), ``carsdepo app``'s page (``app``) and the REST server that
``carsdepo serve`` starts (``rest``), so that monitoring and the KPI report can use them. A record
says when (UTC), from which source, by which model (registered name and version) at which score
threshold, for which image (sha256 of the bytes the model read; None when none were read, so
nothing about a file that could not be read is recorded), how long the model took, and what it
answered: the damage answer (``"None"`` or detections) or the error. Day files are created readable
by their owner only.

Files are per UTC day (``<YYYY-MM-DD>.jsonl``), so a reader can take a window of days and old
days can be archived whole. Writers in several processes (a Dagster run, the CLI, the server)
append under an exclusive ``flock`` with one ``write`` per call, so lines never interleave. A
reader skips a line it cannot parse (a crash mid-write) and reports it instead of failing.

Latency is the model's time per image: the wall time of a chunk of images divided by their
number. A REST request's HTTP overhead is not in it (benchmarks/bench_inference.py measures it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

LOG_FILE_MODE = 0o600  # what was answered for whom, and image digests: the owner's only
BATCH = "batch"
CLI = "cli"
REST = "rest"
APP = "app"
SOURCES = (BATCH, CLI, REST, APP)
# How `carsdepo serve` tells the served model where to record and which version it is.
LOG_DIR_ENV = "CARSDEPO_INFERENCE_LOG"
MODEL_NAME_ENV = "CARSDEPO_MODEL_NAME"
MODEL_VERSION_ENV = "CARSDEPO_MODEL_VERSION"

logger = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class InferenceRecord:
    """One answered image. ``result`` is the damage answer, or None when ``error`` is set."""

    source: str
    model_name: str | None
    model_version: str | None
    image_sha256: str | None
    latency_ms: float
    result: str | list[dict] | None
    error: str | None = None
    batch: str | None = None
    image: str | None = None  # the file as the caller named it (cli), when there is one
    threshold: float | None = None  # the score threshold the answer was cut at
    at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"inference source {self.source!r}: expected one of {SOURCES}")

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> InferenceRecord:
        return cls(**payload)


class InferenceLog:
    """The append-only log in ``folder`` (``StateLayout.inference_log``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def append(self, records: Iterable[InferenceRecord]) -> int:
        """Append ``records`` to today's file in one locked write; returns how many."""
        lines = [json.dumps(asdict(record), separators=(",", ":")) + "\n" for record in records]
        if not lines:
            return 0
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = "".join(lines).encode("utf-8")
        path = self.folder / f"{datetime.now(UTC).date().isoformat()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        try:
            if os.fstat(fd).st_mode & 0o077:  # a day file from before it was kept private
                os.fchmod(fd, LOG_FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)  # releases the lock
        return len(lines)

    def files(self, since: date | None = None) -> list[Path]:
        """The day files, oldest first (from ``since`` on, when given)."""
        if not self.folder.is_dir():
            return []
        days = sorted(self.folder.glob("????-??-??.jsonl"))
        return [path for path in days if since is None or path.stem >= since.isoformat()]

    def read(
        self,
        since: date | None = None,
        on_bad_line: Callable[[Path, int, str], None] | None = None,
    ) -> Iterator[InferenceRecord]:
        """Every record (from day ``since`` on), oldest first. A line that is not a record is
        skipped and passed to ``on_bad_line(path, line_number, reason)``."""
        for path in self.files(since):
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield InferenceRecord.from_dict(json.loads(line))
                    except (ValueError, TypeError) as error:
                        if on_bad_line is not None:
                            on_bad_line(path, number, f"{type(error).__name__}: {error}")


def serving_environment(log_folder: Path, model_name: str, model_version: str) -> dict[str, str]:
    """What the served model's process needs in its environment to record its requests."""
    return {
        LOG_DIR_ENV: str(Path(log_folder).resolve()),
        MODEL_NAME_ENV: model_name,
        MODEL_VERSION_ENV: str(model_version),
    }


@dataclass(frozen=True)
class RequestLogger:
    """Records the answers of a served model, one record per row of each request."""

    log: InferenceLog
    model_name: str | None
    model_version: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RequestLogger | None:
        """The logger ``serving_environment`` configured, or None (not served by carsdepo)."""
        env = os.environ if environ is None else environ
        folder = env.get(LOG_DIR_ENV)
        if not folder:
            return None
        return cls(InferenceLog(Path(folder)), env.get(MODEL_NAME_ENV) or None,
                   env.get(MODEL_VERSION_ENV) or None)

    def record(self, digests: Sequence[str | None], answers: list[dict], elapsed_s: float,
               threshold: float) -> None:
        """Append one record per answered row: the sha256 of the bytes the model answered
        (``digests``, None where none were read) and its answer at ``threshold``. A log that
        cannot be written is reported in the server's log; the request is still answered."""
        latency = 1000.0 * elapsed_s / max(1, len(answers))
        records = [
            InferenceRecord(
                source=REST, model_name=self.model_name, model_version=self.model_version,
                image_sha256=digest, latency_ms=round(latency, 2),
                result=answer.get("damage"), error=answer.get("error"), threshold=threshold,
            )
            for digest, answer in zip(digests, answers, strict=True)
        ]
        try:
            self.log.append(records)
        except OSError as error:
            logger.warning("inference log %s: %d answers not recorded: %s", self.log.folder,
                           len(records), error)
