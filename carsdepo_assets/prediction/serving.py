"""REST serving with MLflow's scoring app: the command ``carsdepo serve`` runs.

``uvicorn --factory carsdepo_assets.prediction.rest_app:create_app`` serves one registered
version (``models:/<name>/<version>``, the version the alias named when the server started, so
every worker and the inference log agree) with MLflow's endpoints and payload formats behind
carsdepo's request budget (``prediction.limits``, ``prediction.rest_app``). POST
``/invocations`` with ``{"dataframe_records": [{"image": "<base64>"}]}``; see
``prediction.pyfunc`` for answers.

Several worker processes where the cores allow (``default_workers``), each with its share of the
cores for torch, so that one slow request holds up one worker, not the server; within a worker,
requests are answered one at a time and wait no longer than their timeout. The environment
carries the tracking URI of carsdepo's store, the Python environment's ``bin`` first on PATH,
one malloc arena for all threads (``detection.memory``), the limits, and the variables that
make the served model record each request in the inference log
(``inference_log.serving_environment``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from carsdepo_assets.detection.champion import TRACKING_URI_ENV
from carsdepo_assets.detection.memory import SHARED_ARENA_ENVIRONMENT
from carsdepo_assets.detection.threads import usable_cores
from carsdepo_assets.prediction.inference_log import serving_environment
from carsdepo_assets.prediction.limits import ServingLimits
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.rest_app import MODEL_URI_ENV, THREADS_ENV

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
MAX_DEFAULT_WORKERS = 4  # each holds a copy of the model (about 0.9 GiB resident, idle)
BACKSTOP_S = 30  # MLflow's own timeout, this long after ours: it only stops waiting
MLFLOW_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"


def default_workers(cores: int | None = None) -> int:
    """Worker processes when ``--workers`` is not given: one per core, up to four. On two idle
    cores two single-threaded workers answered 8 concurrent clients in half the time one
    two-threaded worker took (p50 0.41 s vs 0.92 s, ``bench_paths``), as fast for one client,
    at twice the memory (each worker holds its own model: 3.2 GB peak vs 1.5 GB)."""
    return max(1, min(MAX_DEFAULT_WORKERS, usable_cores() if cores is None else cores))


def serve_command(
    model: ModelRef,
    tracking_uri: str,
    log_folder: Path,
    bin_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: ServingLimits | None = None,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The server's argv and environment for ``model`` (see the module docstring)."""
    limits = limits or ServingLimits()
    workers = workers or default_workers()
    argv = [
        str(Path(bin_dir) / "uvicorn"), "--factory",
        "carsdepo_assets.prediction.rest_app:create_app",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]
    base = dict(os.environ if environ is None else environ)
    env = {
        **base,
        TRACKING_URI_ENV: tracking_uri,
        "PATH": os.pathsep.join(filter(None, [str(bin_dir), base.get("PATH", "")])),
        MODEL_URI_ENV: model.uri,
        THREADS_ENV: str(max(1, usable_cores() // workers)),
        MLFLOW_TIMEOUT_ENV: str(math.ceil(limits.timeout_s) + BACKSTOP_S),
        **limits.to_environment(),
        **serving_environment(log_folder, model.name, model.version),
        **SHARED_ARENA_ENVIRONMENT,  # requests are answered in worker threads
    }
    return argv, env
