"""Fixtures shared by the whole suite.

Every test gets its own ``CARSDEPO_HOME`` under pytest's tmp_path, so tests never touch the
developer's real state and can run in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from carsdepo_assets.state import ENV_VAR, StateLayout

pytest_plugins = [
    "carsdepo_assets_tests.fixtures.browser",
    "carsdepo_assets_tests.fixtures.label_studio",
    "carsdepo_assets_tests.fixtures.registry",
]


@pytest.fixture
def carsdepo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateLayout]:
    """A fresh, empty state directory, exported as ``$CARSDEPO_HOME``.

    MLflow keeps its tracking URI process-wide (and mirrors it into ``$MLFLOW_TRACKING_URI``),
    so it is reset here: each test sees the store under its own state directory.
    """
    import mlflow

    layout = StateLayout(tmp_path / "carsdepo-home").ensure()
    monkeypatch.setenv(ENV_VAR, str(layout.root))
    monkeypatch.setenv("DAGSTER_HOME", str(layout.dagster_home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    yield layout
    mlflow.set_tracking_uri(None)
