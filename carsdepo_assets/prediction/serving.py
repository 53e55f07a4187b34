"""REST serving with MLflow's own server: the command ``carsdepo serve`` runs.

``mlflow models serve -m models:/<name>@<alias> --env-manager local -h HOST -p PORT`` with the
tracking URI of carsdepo's store, the Python environment's ``bin`` first on PATH (the server
starts ``uvicorn`` from there), one malloc arena for all its threads (``detection.memory``), and
the variables that make the served model record each
request in the inference log (``inference_log.serving_environment``). POST ``/invocations``
with ``{"dataframe_records": [{"image": "<base64>"}]}``; see ``prediction.pyfunc`` for answers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from carsdepo_assets.detection.champion import TRACKING_URI_ENV
from carsdepo_assets.detection.memory import SHARED_ARENA_ENVIRONMENT
from carsdepo_assets.prediction.inference_log import serving_environment
from carsdepo_assets.prediction.models import ALIASES, ModelRef

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001


def serve_command(
    model: ModelRef,
    choice: str,
    tracking_uri: str,
    log_folder: Path,
    bin_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The server's argv and environment for ``model``, resolved from ``choice``.

    An alias is served as ``models:/<name>@<alias>`` (what MLflow resolves at start-up, the
    version ``model`` names); a version number as ``models:/<name>/<version>``."""
    model_uri = f"models:/{model.name}@{choice}" if choice in ALIASES else model.uri
    argv = [
        str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", host, "-p", str(port),
    ]
    base = dict(os.environ if environ is None else environ)
    env = {
        **base,
        TRACKING_URI_ENV: tracking_uri,
        "PATH": os.pathsep.join(filter(None, [str(bin_dir), base.get("PATH", "")])),
        **serving_environment(log_folder, model.name, model.version),
        **SHARED_ARENA_ENVIRONMENT,  # requests are answered in worker threads
    }
    return argv, env
