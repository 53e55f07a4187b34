"""Every user-facing path beside its floor, on the same images, one after the other.

    python -m benchmarks.bench_paths [--quick] [--images 200] [--requests 20]
                                     [--predict-images 48] [--memory-sizes 100 2000]

One process tree, one measurement at a time (run it under ``heavy`` so that nothing else
competes for the cores). A tiny detector is trained on synthetic panels and promoted in a
temporary CARSDEPO_HOME, as bench_inference does (speed does not depend on how well it learned);
the measured images are synthetic 640x480 JPEG panels. Floors and the paths measured against
them:

- decode (Pillow open + load of each file): floor of feature extraction and ``batch_profile``;
- decode + sha256 (read the bytes, hash them, decode): floor of ``ingest_batch`` (the work of
  ``raw_images``) and of ``carsdepo ingest`` (the CLI, which runs the Dagster job);
- the model's forward pass on preprocessed tensors (batches of 1 and 8; ``forward_best`` the
  faster), with the process prepared as every inference path prepares it
  (``prediction.runtime``): floor of ``predict_files`` (``carsdepo predict``'s work), the
  ``carsdepo predict`` command and ``predict_batch`` (the work of ``batch_predictions``); with
  the decode added, the floor of the REST server (``carsdepo serve``) with 1 and 8 images per
  request, and of 1-image requests from 8 clients at once (p50 and p95), with one worker
  process, two, and the default number (``--workers``); the hostile probe (8 rows of a
  one-colour 7000x7000 PNG: refused) and one such photo (answered at the working-side bound),
  with the servers' peak memory after them;
- start-up: ``carsdepo --help``, ``carsdepo predict`` of a missing file and ``carsdepo ingest``
  without its arguments, each answered before anything heavy is imported (target < 1 s);
- code location load: a fresh Python importing ``carsdepo_assets.definitions``, what every
  Dagster process (``dagster dev``, the daemon, each run worker, the CLI's runs) pays first.

Each figure is one JSON line in ``results/paths.jsonl`` with ``floor`` (the floor's figure
name), ``ratio`` (the path's figure over the floor's: throughput ratios want to be high,
latency ratios low) and ``target`` where the issue sets one. Memory: peak RSS of
``carsdepo predict`` and of the REST server's processes, and the resident memory a fresh
process gains at each step (torch import, MLflow import, model load, one chunk of 8 images);
ingestion's peak-RSS growth at two batch sizes (it must stay flat).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks import _record
from benchmarks.bench_inference import (
    _free_port,
    _post,
    _process_tree,
    _status_mib,
    _wait_for,
    champion,
    make_photos,
    train_and_promote,
)
from carsdepo_assets.prediction.serving import default_workers
from carsdepo_assets.state import ENV_VAR, PROJECT_ROOT, StateLayout

SUITE = "paths"
WIDTH, HEIGHT = 640, 480
FORWARD_IMAGES = 32  # preprocessed tensors timed by the forward-pass floor
CLIENTS = 8  # REST clients at once
STARTUP_RUNS = 3


def record(name: str, value: float, unit: str, data: str, *, floor: str | None = None,
           ratio: float | None = None, target: str | None = None, **extra) -> dict:
    fields = {"floor": floor, "ratio": None if ratio is None else round(ratio, 3),
              "target": target, **extra}
    return _record.record(SUITE, name, round(value, 2), unit, data,
                          **{key: value for key, value in fields.items() if value is not None})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--images", type=int, default=200, help="photos for the throughputs")
    parser.add_argument("--predict-images", type=int, default=48,
                        help="photos for carsdepo predict, predict_batch and the memory steps")
    parser.add_argument("--requests", type=int, default=20, help="REST requests of 1 image")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[100, 2000],
                        metavar=("SMALL", "LARGE"), help="ingestion batch sizes for peak RSS")
    parser.add_argument("--iterations", type=int, default=10, help="training iterations")
    parser.add_argument("--ingest-worker", nargs=2, metavar=("SOURCE", "HOME"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs="+", metavar="HOME_THEN_IMAGES",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.predict_images, args.requests = 24, 16, 4
        args.memory_sizes, args.iterations = [20, 80], 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.ingest_worker:
        ingest_worker(Path(args.ingest_worker[0]), Path(args.ingest_worker[1]))
        return
    if args.memory_worker:
        memory_worker(Path(args.memory_worker[0]), args.memory_worker[1:])
        return
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-paths-") as scratch:
        root = Path(scratch)
        layout = StateLayout(root / "home").ensure()
        os.environ[ENV_VAR] = str(layout.root)
        os.environ["MLFLOW_TRACKING_URI"] = ""
        os.environ.pop("DAGSTER_HOME", None)
        train_and_promote(layout, root, args.iterations)
        photos = make_photos(root / "photos", args.images)
        Bench(layout, root, photos, args, torch.get_num_threads()).run()


class Bench:
    """The measurements in order; floors first, so each path's ratio can be recorded."""

    def __init__(self, layout: StateLayout, root: Path, photos: list[Path],
                 args: argparse.Namespace, threads: int):
        self.layout, self.root, self.photos, self.args = layout, root, photos, args
        self.figures: dict[str, float] = {}
        self.source = f"{len(photos)} synthetic {WIDTH}x{HEIGHT} JPEG panels"
        self.threads = threads

    def put(self, name: str, value: float, unit: str, data: str, floor: str | None = None,
            target: str | None = None, higher_is_better: bool = True, **extra) -> None:
        self.figures[name] = value
        ratio = None
        if floor is not None:
            ratio = value / self.figures[floor]
        record(name, value, unit, data, floor=floor, ratio=ratio, target=target,
               better="higher" if higher_is_better else "lower", **extra)

    def run(self) -> None:
        for photo in self.photos:  # the page cache holds every file for every path alike
            photo.read_bytes()
        self.floors_decode()
        self.ingestion()
        self.features()
        self.forward_floor()
        self.predictions()
        self.rest()
        self.startup()
        self.code_location()
        self.memory()

    # -- decode, ingestion, features -------------------------------------------------------
    def floors_decode(self) -> None:
        started = time.perf_counter()
        for photo in self.photos:
            with Image.open(photo) as image:
                image.load()
        seconds = time.perf_counter() - started
        self.decode_ms = 1000 * seconds / len(self.photos)
        self.put("decode", len(self.photos) / seconds, "images/s",
                 f"Pillow open + load of each file, {self.source}")
        started = time.perf_counter()
        for photo in self.photos:
            data = photo.read_bytes()
            hashlib.sha256(data).hexdigest()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        self.put("decode_sha256", len(self.photos) / (time.perf_counter() - started),
                 "images/s", f"read bytes + sha256 + Pillow decode, {self.source}")

    def ingestion(self) -> None:
        from carsdepo_assets.images.ingest import ingest_batch

        source = self._linked_folder("ingest-source", self.photos)
        started = time.perf_counter()
        ingest_batch(source, "paths-domain", self.layout)
        self.put("ingest_batch", len(self.photos) / (time.perf_counter() - started),
                 "images/s", f"ingest_batch (the raw_images asset's work), {self.source}",
                 floor="decode_sha256", target=">= 0.7 and >= 200 images/s")
        # The CLI runs the Dagster job in a new process: its start-up is the 1-image run.
        fresh = StateLayout(self.root / "cli-home").ensure()
        one = self._linked_folder("cli-one", self.photos[:1])
        fixed = self._cli(["ingest", str(one), "--batch", "cli-one"], fresh)
        total = self._cli(["ingest", str(self._linked_folder("cli-all", self.photos)),
                           "--batch", "cli-all"], fresh)
        self.put("carsdepo_ingest", len(self.photos) / total, "images/s",
                 f"`carsdepo ingest` (Dagster ingest_job, new process), {self.source}, "
                 "end to end", floor="decode_sha256")
        self.put("carsdepo_ingest_startup", fixed, "s",
                 "`carsdepo ingest` of 1 image: process start, imports, Dagster run",
                 higher_is_better=False)

    def features(self) -> None:
        from carsdepo_assets.assets.monitoring import batch_feature_rows
        from carsdepo_assets.monitoring.features import iter_image_features
        from carsdepo_assets.monitoring.profiles import profile_rows, write_profile

        started = time.perf_counter()
        for _ in iter_image_features(self.photos):
            pass
        self.put("feature_extraction", len(self.photos) / (time.perf_counter() - started),
                 "images/s", f"iter_image_features, {self.source}", floor="decode")
        started = time.perf_counter()
        view = profile_rows(batch_feature_rows(self.layout, "paths-domain"))
        write_profile(view, self.layout.batch_profile_path("paths-domain"))
        self.put("batch_profile", len(self.photos) / (time.perf_counter() - started),
                 "images/s", "batch_profile's work (stored images -> features -> whylogs "
                 f"profile -> file), {self.source}", floor="decode", target=">= 0.7")

    # -- the model -----------------------------------------------------------------------
    def forward_floor(self) -> None:
        import torch

        from carsdepo_assets.detection.data import image_tensor
        from carsdepo_assets.prediction.runtime import prepare_inference_process

        prepare_inference_process()  # as every inference path does: the floor is the best pass
        model_ref, detector = champion()
        self.model_ref, self.detector = model_ref, detector
        config = detector.config
        tensors = []
        started = time.perf_counter()
        for photo in self.photos[:FORWARD_IMAGES]:
            with Image.open(photo) as image:
                tensors.append(image_tensor(image, config.min_size, config.max_size)[0])
        preprocess_ms = 1000 * (time.perf_counter() - started) / len(tensors) - self.decode_ms
        net = detector.model.eval()
        with torch.inference_mode():
            net(tensors[:2])  # warm-up
            for batch in (1, 8):
                started = time.perf_counter()
                for start in range(0, len(tensors), batch):
                    net(tensors[start:start + batch])
                ms = 1000 * (time.perf_counter() - started) / len(tensors)
                data = (f"model forward on {len(tensors)} preprocessed tensors "
                        f"({tensors[0].shape[-1]}x{tensors[0].shape[-2]}), batches of {batch}, "
                        f"torch threads {self.threads}")
                self.put(f"forward_ms_batch{batch}", ms, "ms/image", data,
                         higher_is_better=False)
                self.put(f"forward_batch{batch}", 1000 / ms, "images/s", data)
        self.put("preprocess_ms", preprocess_ms, "ms/image",
                 "image_tensor (convert, resize to the model's size, to float tensor) per "
                 "image, beside the decode", higher_is_better=False)
        best = max((1, 8), key=lambda batch: self.figures[f"forward_batch{batch}"])
        self.put("forward_best", self.figures[f"forward_batch{best}"], "images/s",
                 f"the faster of the two: batches of {best}")
        for batch in (1, 8):
            self.put(f"decode_forward_ms_batch{batch}",
                     self.decode_ms + self.figures[f"forward_ms_batch{batch}"], "ms/image",
                     f"decode + forward (batches of {batch}): the floor of a REST request",
                     higher_is_better=False)

    def predictions(self) -> None:
        from carsdepo_assets.prediction.batch import predict_batch
        from carsdepo_assets.prediction.files import predict_files

        photos = self.photos[:self.args.predict_images]
        data = f"{len(photos)} synthetic {WIDTH}x{HEIGHT} JPEG panels"
        started = time.perf_counter()
        predict_files(self.detector, [str(p) for p in photos], self.model_ref)
        self.put("predict_files", len(photos) / (time.perf_counter() - started), "images/s",
                 f"predict_files (carsdepo predict's work, in process), {data}",
                 floor="forward_best")
        self.ingest_quietly(photos, "paths-predict")
        started = time.perf_counter()
        predict_batch(self.layout, "paths-predict", self.detector, self.model_ref)
        self.put("batch_predictions", len(photos) / (time.perf_counter() - started),
                 "images/s", f"predict_batch (the batch_predictions asset's work), {data}",
                 floor="forward_best", target=">= 0.8")
        fixed, _ = self._cli_rusage(["predict", "--json", str(photos[0])])
        total, peak = self._cli_rusage(["predict", "--json", *map(str, photos)])
        self.put("carsdepo_predict", len(photos) / total, "images/s",
                 f"`carsdepo predict` (new process), {data}, end to end",
                 floor="forward_best")
        self.put("carsdepo_predict_startup", fixed, "s",
                 "`carsdepo predict` of 1 image: process start, imports, model load",
                 higher_is_better=False)
        self.put("carsdepo_predict_peak_rss", peak, "MiB",
                 f"`carsdepo predict` of {len(photos)} images: peak resident memory",
                 higher_is_better=False)

    def ingest_quietly(self, photos: list[Path], batch: str) -> None:
        from carsdepo_assets.images.ingest import ingest_batch

        ingest_batch(self._linked_folder(batch, photos), batch, self.layout)

    # -- REST ----------------------------------------------------------------------------
    def rest(self) -> None:
        encoded = [base64.b64encode(p.read_bytes()).decode("ascii") for p in self.photos]
        for workers in sorted({1, 2, default_workers()}):
            self._rest_server(encoded, workers)

    def _rest_server(self, encoded: list[str], workers: int) -> None:
        """One server with ``workers`` worker processes: 1 client, then 8 clients at once."""
        port = _free_port()
        log_path = self.root / f"serve-{workers}.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [_carsdepo(), "serve", "--port", str(port), "--workers", str(workers)],
                cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for(url, server, log_path)
            idle = _tree_memory(server.pid, "VmRSS")
            _post(url, encoded[:8])  # warm-up
            single = [_post(url, [encoded[i % len(encoded)]]) for i in range(self.args.requests)]
            eight = [_post(url, [encoded[(i * 8 + j) % len(encoded)] for j in range(8)])
                     for i in range(max(2, self.args.requests // 2))]
            concurrent = _concurrent_posts(url, encoded, CLIENTS, self.args.requests)
            peak = _tree_memory(server.pid, "VmHWM")
            large = _large_photo_requests(url)
            peak_large = _tree_memory(server.pid, "VmHWM")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        served = f"`carsdepo serve --workers {workers}` on 127.0.0.1"
        data = (f"{served}, base64 {WIDTH}x{HEIGHT} JPEG panels in dataframe_records, end to "
                "end (client: requests)")
        suffix = "" if workers == 1 else f"_{workers}_workers"
        self.put(f"rest_1_image_ms_p50{suffix}", statistics.median(single), "ms/request",
                 f"{data}, {len(single)} requests one after another",
                 floor="decode_forward_ms_batch1", target="<= 1.3" if workers == 1 else None,
                 higher_is_better=False)
        self.put(f"rest_1_image_ms_p95{suffix}", _p95(single), "ms/request",
                 f"{data}, {len(single)} requests one after another",
                 floor=f"rest_1_image_ms_p50{suffix}", higher_is_better=False)
        for label, quantile in (("p50", statistics.median), ("p95", _p95)):
            self.put(f"rest_{CLIENTS}_clients_ms_{label}{suffix}", quantile(concurrent),
                     "ms/request", f"{data}, {CLIENTS} clients at once, each sending "
                     f"{self.args.requests} requests of 1 image in a row",
                     floor=f"rest_1_image_ms_p50{suffix}", higher_is_better=False)
        if workers == 1:
            self.put("rest_8_images_ms_per_image_p50", statistics.median(eight) / 8, "ms/image",
                     f"{data}, {len(eight)} requests of 8, median request time / 8",
                     floor="rest_1_image_ms_p50", target="<= 1.0", higher_is_better=False)
            self.put("rest_8_images_vs_floor", statistics.median(eight) / 8, "ms/image",
                     "the same figure against decode + forward in batches of 8",
                     floor="decode_forward_ms_batch8", higher_is_better=False)
        for label, mib in idle.items():
            self.put(f"rest_idle_rss_{label}{suffix}", mib, "MiB",
                     f"REST server process {label!r} ({workers} workers) once ready, before "
                     "any request", higher_is_better=False)
        for label, mib in peak.items():
            self.put(f"rest_peak_rss_{label}{suffix}", mib, "MiB",
                     f"REST server process {label!r} ({workers} workers): peak after the "
                     "requests", higher_is_better=False)
        self.put(f"rest_7000px_refused_ms{suffix}", large["refused_ms"], "ms/request",
                 f"{served}: 8 rows of a one-colour 7000x7000 PNG (a "
                 "1.7 MB body), refused over the pixel budget", higher_is_better=False)
        self.put(f"rest_7000px_answered_ms{suffix}", large["answered_ms"], "ms/request",
                 f"{served}: 1 row of the same PNG, answered at the "
                 "working-side bound", higher_is_better=False)
        self.put(f"rest_peak_rss_total_after_7000px{suffix}", peak_large["total"], "MiB",
                 f"REST server processes ({workers} workers): peak after those two requests "
                 f"(before them: {peak['total']} MiB)", higher_is_better=False)

    # -- start-up ------------------------------------------------------------------------
    def startup(self) -> None:
        """Commands that should answer before anything heavy is imported: the median of a few
        runs each, with the exit code each must give."""
        missing = str(self.root / "no-such-photo.jpg")
        for name, arguments, code, what in (
            ("carsdepo_help", ["--help"], 0, "`carsdepo --help`"),
            ("carsdepo_predict_missing_file", ["predict", missing], 1,
             "`carsdepo predict <a file that does not exist>`: the file is named, exit 1"),
            ("carsdepo_ingest_argument_error", ["ingest"], 2,
             "`carsdepo ingest` without its arguments: argparse's error, exit 2"),
        ):
            runs = [self._cli_seconds(arguments, code) for _ in range(STARTUP_RUNS)]
            self.put(f"{name}_s", statistics.median(runs), "s",
                     f"{what}: process start to exit, median of {STARTUP_RUNS} runs",
                     target="< 1.0", higher_is_better=False)

    def code_location(self) -> None:
        """The import of the code location, which loads no ML library (torch, whylogs,
        MLflow): the assets import them when they run."""
        runs = []
        for _ in range(STARTUP_RUNS):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import carsdepo_assets.definitions"],
                           cwd=PROJECT_ROOT, check=True, capture_output=True,
                           env=os.environ.copy())
            runs.append(time.perf_counter() - started)
        self.put("code_location_load_s", statistics.median(runs), "s",
                 "a fresh Python importing carsdepo_assets.definitions (the Definitions "
                 f"built): process start to exit, median of {STARTUP_RUNS} runs",
                 higher_is_better=False)

    # -- memory --------------------------------------------------------------------------
    def memory(self) -> None:
        photos = self.photos[:8]
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_paths", "--memory-worker",
             str(self.layout.root), *map(str, photos)],
            cwd=PROJECT_ROOT, check=True, capture_output=True, text=True, env=os.environ.copy())
        steps = json.loads(completed.stdout.strip().splitlines()[-1])
        for step, mib in steps.items():
            self.put(f"predict_rss_{step}", mib, "MiB",
                     "resident memory a fresh process gains at this step of carsdepo predict "
                     "(peak for the chunk)", higher_is_better=False)
        small, large = self.args.memory_sizes
        growth = {size: self._ingest_growth(size) for size in (small, large)}
        for size, mib in growth.items():
            self.put("ingest_rss_growth", mib, "MiB",
                     f"ingest_batch of {size} distinct {WIDTH}x{HEIGHT} JPEGs in a fresh "
                     "process: peak minus resident memory before", higher_is_better=False,
                     batch_size=size)

    def _ingest_growth(self, count: int) -> float:
        """Peak-RSS growth of ingesting ``count`` distinct files made from the photos: the same
        JPEG with a different trailing byte string after its end marker is another image."""
        folder = self.root / f"memory-{count}"
        folder.mkdir()
        for index in range(count):
            photo = self.photos[index % len(self.photos)]
            copy = folder / f"{index:05d}-{photo.name}"
            shutil.copyfile(photo, copy)
            with copy.open("ab") as handle:
                handle.write(f"copy {index}".encode())
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_paths", "--ingest-worker", str(folder),
             str(self.root / f"memory-home-{count}")],
            cwd=PROJECT_ROOT, check=True, capture_output=True, text=True, env=os.environ.copy())
        shutil.rmtree(folder)
        return json.loads(completed.stdout.strip().splitlines()[-1])["growth_mib"]

    # -- helpers -------------------------------------------------------------------------
    def _linked_folder(self, name: str, photos: list[Path]) -> Path:
        folder = self.root / "sources" / name
        folder.mkdir(parents=True)
        for photo in photos:
            os.link(photo, folder / photo.name)
        return folder

    def _cli(self, arguments: list[str], layout: StateLayout) -> float:
        started = time.perf_counter()
        subprocess.run([_carsdepo(), *arguments], cwd=PROJECT_ROOT, check=True,
                       capture_output=True, env={**os.environ, ENV_VAR: str(layout.root)})
        return time.perf_counter() - started

    def _cli_seconds(self, arguments: list[str], expected_code: int) -> float:
        started = time.perf_counter()
        finished = subprocess.run([_carsdepo(), *arguments], cwd=PROJECT_ROOT,
                                  capture_output=True, text=True, env=os.environ.copy())
        seconds = time.perf_counter() - started
        if finished.returncode != expected_code:
            raise RuntimeError(f"carsdepo {' '.join(arguments)} exited {finished.returncode}, "
                               f"expected {expected_code}: {finished.stderr[-2000:]}")
        return seconds

    def _cli_rusage(self, arguments: list[str]) -> tuple[float, float]:
        """Seconds and peak resident MiB of one ``carsdepo`` command."""
        started = time.perf_counter()
        process = subprocess.Popen([_carsdepo(), *arguments], cwd=PROJECT_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"carsdepo {arguments[0]} failed: {process.stderr.read()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024


def _carsdepo() -> str:
    return str(Path(sys.executable).parent / "carsdepo")


def _tree_memory(pid: int, field: str) -> dict[str, float]:
    """``field`` (VmRSS or VmHWM) of the server process (uvicorn; with several workers, their
    supervisor) and of each process it started, in start order."""
    found = {"server": round(_status_mib(pid, field), 1)}
    for number, member in enumerate(sorted(_process_tree(pid)[1:]), start=1):
        found[f"child{number}"] = round(_status_mib(member, field), 1)
    found["total"] = round(sum(found.values()), 1)
    return found


def _concurrent_posts(url: str, encoded: list[str], clients: int, each: int) -> list[float]:
    """Request times (ms) of ``clients`` threads, each posting ``each`` 1-image requests."""
    from concurrent.futures import ThreadPoolExecutor

    def client(offset: int) -> list[float]:
        return [_post(url, [encoded[(offset + i) % len(encoded)]]) for i in range(each)]

    with ThreadPoolExecutor(clients) as pool:
        return [ms for times in pool.map(client, range(clients)) for ms in times]


def _large_photo_requests(url: str) -> dict[str, float]:
    """Times (ms) of the hostile probe's request, refused, and of one such photo, answered."""
    import requests

    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (90, 90, 90)).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    times = {}
    for name, rows, status in (("refused_ms", 8, 400), ("answered_ms", 1, 200)):
        started = time.perf_counter()
        response = requests.post(f"{url}/invocations", timeout=600,
                                 json={"dataframe_records": [{"image": image}] * rows})
        times[name] = 1000.0 * (time.perf_counter() - started)
        if response.status_code != status:
            raise RuntimeError(f"{rows} rows of a 7000x7000 PNG: HTTP {response.status_code}, "
                               f"expected {status}: {response.text[:500]}")
    return times


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _reset_peak() -> float:
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib(os.getpid(), "VmRSS")


def ingest_worker(source: Path, home: Path) -> None:
    from carsdepo_assets.images.ingest import ingest_batch

    layout = StateLayout(home).ensure()
    before = _reset_peak()
    ingest_batch(source, "memory", layout)
    print(json.dumps({"growth_mib": _status_mib(os.getpid(), "VmHWM") - before}))


def memory_worker(home: Path, images: list[str]) -> None:
    """Resident memory gained at each step that ``carsdepo predict`` takes."""
    steps: dict[str, float] = {}
    last = _status_mib(os.getpid(), "VmRSS")
    steps["python_and_carsdepo"] = last

    def step(name: str) -> None:
        nonlocal last
        now = _status_mib(os.getpid(), "VmRSS")
        steps[name], last = round(now - last, 1), now

    import torch  # noqa: F401

    step("torch_import")
    import mlflow  # noqa: F401

    step("mlflow_import")
    from carsdepo_assets.detection.champion import configure_mlflow

    configure_mlflow(StateLayout(home))
    model_ref, detector = champion()
    step("model_load")
    before = _reset_peak()
    from carsdepo_assets.prediction.files import predict_files

    predict_files(detector, images, model_ref)
    steps["chunk_of_8_peak"] = round(_status_mib(os.getpid(), "VmHWM") - before, 1)
    steps["total_peak"] = round(_status_mib(os.getpid(), "VmHWM"), 1)
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
