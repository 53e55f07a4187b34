"""The code location (``carsdepo_assets.definitions``) as every Dagster process loads it."""

from __future__ import annotations

import json
import subprocess
import sys

# Seconds to import each, which every process that loads the code location would pay: the CLI,
# `dagster dev`, the daemon and each run worker. The assets import them when they run.
ML_LIBRARIES = ("torch", "torchvision", "whylogs", "mlflow", "dagster_mlflow",
                "label_studio_sdk")


def test_code_location_loads_without_the_ml_libraries(carsdepo_home):
    loaded = subprocess.run(
        [sys.executable, "-W", "ignore", "-c",
         "import json, sys\n"
         "from carsdepo_assets.definitions import defs\n"
         "defs.get_repository_def()\n"
         "print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )
    modules = set(json.loads(loaded.stdout))
    assert [name for name in ML_LIBRARIES if name in modules] == []
