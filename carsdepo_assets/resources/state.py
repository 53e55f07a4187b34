"""The state directory as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from carsdepo_assets.state import StateLayout, default_home


class CarsdepoHome(ConfigurableResource):
    """Root of all local state (``CARSDEPO_HOME``); empty means the environment's default."""

    path: str = Field(
        default="",
        description="State directory. Empty: $CARSDEPO_HOME, else .carsdepo/ in the checkout.",
    )

    @property
    def layout(self) -> StateLayout:
        root = self.path or str(default_home())
        return StateLayout(Path(root)).ensure()
