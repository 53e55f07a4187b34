"""What ``carsdepo serve`` starts: uvicorn on carsdepo's guarded app, the worker count and each
worker's share of the cores, the limits and the exact version served (no server started here;
``test_rest_serving.py`` runs it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carsdepo_assets.detection.threads import usable_cores
from carsdepo_assets.prediction.limits import LIMITS_ENV, ServingLimits
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.prediction.rest_app import MODEL_URI_ENV, THREADS_ENV
from carsdepo_assets.prediction.serving import default_workers, serve_command


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 2), (3, 3), (4, 4), (8, 4), (64, 4)])
def test_one_worker_per_core_up_to_four(cores: int, workers: int) -> None:
    assert default_workers(cores) == workers


def test_the_server_runs_the_guarded_app_on_the_exact_version_within_its_limits(
    tmp_path: Path,
) -> None:
    limits = ServingLimits(max_rows=5, timeout_s=7.5, allowed_path_roots=("/srv/photos",))

    argv, env = serve_command(ModelRef("detector", "3"), "sqlite:///x.db", tmp_path / "log",
                              tmp_path / "bin", port=18301, limits=limits, workers=2,
                              environ={"PATH": "/usr/bin"})

    assert argv == [str(tmp_path / "bin" / "uvicorn"), "--factory",
                    "carsdepo_assets.prediction.rest_app:create_app", "--host", "127.0.0.1",
                    "--port", "18301", "--workers", "2"]
    assert env[MODEL_URI_ENV] == "models:/detector/3"
    assert env[THREADS_ENV] == str(max(1, usable_cores() // 2))
    assert ServingLimits.from_environment({LIMITS_ENV: env[LIMITS_ENV]}) == limits
    assert env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == "38"  # ours, then a backstop
    assert env["PATH"] == f"{tmp_path / 'bin'}:/usr/bin"
