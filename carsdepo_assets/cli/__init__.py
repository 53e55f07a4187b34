"""The orchestration layer: the ``carsdepo`` command line (``parser``), one module per command
family (``data``, ``models``, ``check``, ``demo``, ``train``, ``train_real``), the one
``runner`` every command runs Dagster jobs through, and the ``console`` they print with."""

from __future__ import annotations

from collections.abc import Sequence

from carsdepo_assets.cli.console import quiet_third_parties


def main(argv: Sequence[str] | None = None) -> int:
    """The ``carsdepo`` command: third parties are quieted before any command imports the
    packages that warn at import time (dagster-mlflow, Dagster's preview APIs, MLflow)."""
    quiet_third_parties()
    from carsdepo_assets.cli.parser import main as run_command

    return run_command(argv)


__all__ = ["main"]
