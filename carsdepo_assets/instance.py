"""The local Dagster instance: ``$CARSDEPO_HOME/dagster`` configured by the repo's dagster.yaml.

The CLI runs jobs in this instance so that its runs show in the Dagster UI (``make dev``) exactly
like runs launched there.
"""

from __future__ import annotations

import os
import shutil

from dagster import DagsterInstance

from carsdepo_assets.state import PROJECT_ROOT, StateLayout

INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"


def prepare_dagster_home(layout: StateLayout) -> str:
    """Point ``DAGSTER_HOME`` at the state directory and install the instance config there."""
    home = layout.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != INSTANCE_CONFIG.read_bytes():
        shutil.copyfile(INSTANCE_CONFIG, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


def local_instance(layout: StateLayout) -> DagsterInstance:
    prepare_dagster_home(layout)
    return DagsterInstance.get()
