"""How ``carsdepo app`` starts the page: ``streamlit run`` on ``page.py``, headless, without
usage statistics, on 127.0.0.1 by default, and how the page learns its settings back.

The page gets the state folder and the model name through its environment, as the served
model does (``inference_log.serving_environment``); its uploads are capped by the web server
at the image policy's file size as well as by the page; its threads share one malloc arena
(``detection.memory``), since the web server's threads start before any carsdepo code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from carsdepo_assets.app.limits import PhotoLimits
from carsdepo_assets.detection.memory import SHARED_ARENA_ENVIRONMENT
from carsdepo_assets.prediction.inference_log import MODEL_NAME_ENV
from carsdepo_assets.state import ENV_VAR, StateLayout

PAGE_SCRIPT = Path(__file__).resolve().with_name("page.py")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501


@dataclass(frozen=True)
class AppSettings:
    """What the page reads from the environment ``app_command`` gives it."""

    layout: StateLayout
    model_name: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppSettings:
        """Raises ValueError naming the variable when one is missing: the page is started by
        ``carsdepo app``, which sets both."""
        env = os.environ if environ is None else environ
        missing = [name for name in (ENV_VAR, MODEL_NAME_ENV) if not env.get(name)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} not set: start the page with `carsdepo app`")
        return cls(StateLayout(Path(env[ENV_VAR])), env[MODEL_NAME_ENV])


def app_command(
    layout: StateLayout,
    model_name: str,
    tracking_uri: str,
    bin_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: PhotoLimits | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The web server's argv and environment."""
    from carsdepo_assets.detection.champion import TRACKING_URI_ENV  # mlflow: not for --help

    limits = limits or PhotoLimits()
    argv = [
        str(Path(bin_dir) / "streamlit"), "run", str(PAGE_SCRIPT),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--server.maxUploadSize", str(limits.upload_megabytes),
        "--client.showErrorDetails", "type", "--client.toolbarMode", "viewer",
    ]
    base = dict(os.environ if environ is None else environ)
    env = {
        **base,
        ENV_VAR: str(Path(layout.root).resolve()),
        MODEL_NAME_ENV: model_name,
        TRACKING_URI_ENV: tracking_uri,
        "PATH": os.pathsep.join(filter(None, [str(bin_dir), base.get("PATH", "")])),
        **SHARED_ARENA_ENVIRONMENT,
    }
    return argv, env
