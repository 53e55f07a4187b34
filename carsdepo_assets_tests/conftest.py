"""Fixtures shared by the whole suite.

Every test gets its own ``CARSDEPO_HOME`` under pytest's tmp_path, so tests never touch the
developer's real state and can run in any order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from carsdepo_assets.state import ENV_VAR, StateLayout


@pytest.fixture
def carsdepo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateLayout:
    """A fresh, empty state directory, exported as ``$CARSDEPO_HOME``."""
    layout = StateLayout(tmp_path / "carsdepo-home").ensure()
    monkeypatch.setenv(ENV_VAR, str(layout.root))
    monkeypatch.setenv("DAGSTER_HOME", str(layout.dagster_home))
    return layout
