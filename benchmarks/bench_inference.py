"""Inference speed and memory: batch predictions, the REST server, peak memory vs batch size.

    python -m benchmarks.bench_inference [--quick] [--images 48] [--requests 20]
                                         [--memory-sizes 50 200] [--iterations 20]

A detector with the default (cpu) configuration is trained for a few iterations on synthetic
panels (speed does not depend on how well it learned), logged, registered and promoted in a
temporary CARSDEPO_HOME, exactly as the training job does. Then, on synthetic 640x480 photos:

- ``predict_batch`` (the ``batch_predictions`` asset's work: store reads, decoding, the model,
  the predictions file and the inference log) at chunk sizes 1 and 8: images/s, and the
  model's ms per image p50/p95 (a chunk's time divided by its images);
- the REST server that ``carsdepo serve`` starts (MLflow's, with the champion): end-to-end
  latency of one-image requests (base64 JPEG over HTTP) p50/p95, of 8-image requests, and the
  server's peak resident memory;
- peak resident memory of ``predict_batch`` in a fresh process per batch size: it must stay
  flat as the batch grows, since images are processed a chunk at a time.

Wall-clock figures include time spent waiting for a core on a shared machine: each figure
records the 1-minute load average at the time (``load_1min``) to tell a busy run apart.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from benchmarks import _record
from carsdepo_assets.state import ENV_VAR, PROJECT_ROOT, StateLayout

SUITE = "inference"
WIDTH, HEIGHT = 640, 480
SERVER_START_TIMEOUT_S = 300


def record(name: str, value: float, unit: str, data: str, **extra) -> dict:
    return _record.record(SUITE, name, value, unit, data,
                          load_1min=round(os.getloadavg()[0], 2), **extra)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, for a smoke run (overrides the sizes below)")
    parser.add_argument("--images", type=int, default=48, help="photos for throughput")
    parser.add_argument("--requests", type=int, default=20, help="REST requests per kind")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[50, 200],
                        help="batch sizes whose peak memory is measured (e.g. 100 2000)")
    parser.add_argument("--iterations", type=int, default=20, help="training iterations")
    parser.add_argument("--worker", nargs=3, metavar=("HOME", "BATCH", "CHUNK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.requests, args.memory_sizes, args.iterations = 16, 8, [16, 48], 4
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        memory_worker(Path(args.worker[0]), args.worker[1], int(args.worker[2]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        root = Path(scratch)
        layout = StateLayout(root / "home").ensure()
        os.environ[ENV_VAR] = str(layout.root)
        os.environ["MLFLOW_TRACKING_URI"] = ""
        train_and_promote(layout, root, args.iterations)
        photos = make_photos(root / "photos", max([args.images, *args.memory_sizes]))
        bench_batch_predictions(layout, photos, args.images)
        bench_rest(layout, photos, args.requests)
        for size in args.memory_sizes:
            bench_memory(layout, photos, size)


def train_and_promote(layout: StateLayout, root: Path, iterations: int) -> None:
    import mlflow

    from carsdepo_assets.detection.backends import train_detector
    from carsdepo_assets.detection.champion import configure_mlflow, promote
    from carsdepo_assets.detection.config import DetectorConfig
    from carsdepo_assets.detection.data import CocoSplit
    from carsdepo_assets.prediction.pyfunc import log_detector_model
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME
    from carsdepo_assets.synth import generate_dataset

    train = generate_dataset(root / "train", 16, seed=404, width=WIDTH, height=HEIGHT).out_dir
    config = DetectorConfig(iterations=iterations, eval_period=10_000)
    detector = train_detector(CocoSplit.from_folder(train), None, config, root / "work")
    configure_mlflow(layout, "bench-inference")
    with mlflow.start_run():
        info = log_detector_model(detector.save(root / "work" / "detector"),
                                  registered_model_name=DEFAULT_MODEL_NAME)
    promote(DEFAULT_MODEL_NAME, str(info.registered_model_version))


def make_photos(folder: Path, count: int) -> list[Path]:
    from carsdepo_assets.synth import generate_dataset

    result = generate_dataset(folder, count, seed=505, width=WIDTH, height=HEIGHT)
    return sorted(result.images_dir.glob("*.jpg"))


def ingest(layout: StateLayout, photos: list[Path], batch: str, folder: Path) -> None:
    """Ingest ``photos`` as ``batch`` from a folder of hard links (no copies)."""
    from carsdepo_assets.images.ingest import ingest_batch

    folder.mkdir(parents=True)
    for photo in photos:
        os.link(photo, folder / photo.name)
    ingest_batch(folder, batch, layout)


def champion():
    from carsdepo_assets.prediction.models import resolve_model
    from carsdepo_assets.prediction.pyfunc import load_registered_detector
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME

    model = resolve_model(DEFAULT_MODEL_NAME)
    return model, load_registered_detector(model.uri)


def bench_batch_predictions(layout: StateLayout, photos: list[Path], count: int) -> None:
    from carsdepo_assets.prediction.batch import predict_batch, read_predictions
    from carsdepo_assets.prediction.inference_log import InferenceLog

    ingest(layout, photos[:count], "throughput", layout.root.parent / "throughput")
    model, detector = champion()
    with Image.open(photos[0]) as photo:
        detector.predict([photo.convert("RGB")])  # warm-up
    for chunk in (1, 8):
        started = time.perf_counter()
        result = predict_batch(layout, "throughput", detector, model, chunk_size=chunk,
                               log=InferenceLog(layout.inference_log))
        seconds = time.perf_counter() - started
        latencies = [row["latency_ms"] for row in read_predictions(result.path)]
        data = (f"predict_batch over {count} synthetic {WIDTH}x{HEIGHT} JPEGs, chunk {chunk}, "
                f"model input {detector.config.max_size}x{detector.config.min_size}")
        record(f"batch_predict_images_per_s_chunk{chunk}", round(count / seconds, 2),
               "images/s", data, chunk=chunk)
        for q in (50, 95):
            record(f"batch_predict_ms_p{q}_chunk{chunk}",
                   round(float(np.percentile(latencies, q)), 1), "ms/image", data, chunk=chunk)


def bench_rest(layout: StateLayout, photos: list[Path], count: int) -> None:
    port = _free_port()
    log_path = layout.root / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "carsdepo_assets.cli", "serve", "--port", str(port),
             "--workers", "1"],
            cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, server, log_path)
        one = [_b64(photos[i % len(photos)]) for i in range(count)]
        eight = [[_b64(photos[(i * 8 + j) % len(photos)]) for j in range(8)]
                 for i in range(max(2, count // 4))]
        _post(url, one[:2])  # warm-up
        single = [_post(url, [image]) for image in one]
        batched = [_post(url, images) for images in eight]
        peak = max(_status_mib(pid, "VmHWM") for pid in _process_tree(server.pid))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    data = ("carsdepo serve --workers 1 (MLflow's scoring app under uvicorn) on 127.0.0.1, "
            f"base64 {WIDTH}x{HEIGHT} JPEGs over HTTP, end to end")
    for q in (50, 95):
        record(f"rest_ms_p{q}_1_image", round(float(np.percentile(single, q)), 1),
               "ms/request", data, requests=len(single))
        record(f"rest_ms_p{q}_8_images", round(float(np.percentile(batched, q)), 1),
               "ms/request", data, requests=len(batched))
    record("rest_server_peak_rss", round(peak, 1), "MiB", data)


def bench_memory(layout: StateLayout, photos: list[Path], size: int) -> None:
    batch = f"memory-{size}"
    ingest(layout, photos[:size], batch, layout.root.parent / batch)
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_inference", "--worker", str(layout.root), batch,
         "8"], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True,
        env=os.environ.copy(),
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    data = f"predict_batch, chunk 8, {size} synthetic {WIDTH}x{HEIGHT} JPEGs, fresh process"
    record("batch_predict_peak_rss", round(result["peak_rss_mib"], 1), "MiB", data,
           batch_size=size)
    record("batch_predict_rss_growth",
           round(result["peak_rss_mib"] - result["baseline_rss_mib"], 1), "MiB",
           data + "; peak minus the resident memory once the model is loaded", batch_size=size)


def memory_worker(home: Path, batch: str, chunk: int) -> None:
    """Runs in the subprocess: load the champion, predict the batch, print memory figures."""
    from carsdepo_assets.detection.champion import configure_mlflow
    from carsdepo_assets.prediction.batch import predict_batch

    layout = StateLayout(home)
    configure_mlflow(layout)
    model, detector = champion()
    baseline = _status_mib(os.getpid(), "VmRSS")
    predict_batch(layout, batch, detector, model, chunk_size=chunk)
    print(json.dumps({"baseline_rss_mib": baseline,
                      "peak_rss_mib": _status_mib(os.getpid(), "VmHWM")}))


def _post(url: str, images: list[str]) -> float:
    started = time.perf_counter()
    response = requests.post(f"{url}/invocations", timeout=300,
                             json={"dataframe_records": [{"image": i} for i in images]})
    elapsed = 1000.0 * (time.perf_counter() - started)
    response.raise_for_status()
    return elapsed


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"carsdepo serve exited: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise RuntimeError(f"carsdepo serve did not start in {SERVER_START_TIMEOUT_S}s")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc), for the server and the workers it starts."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = task / "children"
            if children.is_file():
                queue += [int(child) for child in children.read_text().split()]
    return found


def _status_mib(pid: int, field: str) -> float:
    """A memory figure of a process from /proc (``VmHWM``: its peak resident size), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}; this benchmark needs Linux")


if __name__ == "__main__":
    main()
