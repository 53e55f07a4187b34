"""The orchestration layer: the ``carsdepo`` command line (``parser``), one module per command
family (``data``, ``models``, ``check``, ``demo``, ``train_real``), the one ``runner`` every
command runs Dagster jobs through, and the ``console`` they print with."""

from carsdepo_assets.cli.parser import main

__all__ = ["main"]
