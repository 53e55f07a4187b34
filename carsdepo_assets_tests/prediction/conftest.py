"""The prediction tests' helpers; their registered champion and stores come from the
session-wide plugin ``carsdepo_assets_tests.fixtures.registry``."""

from __future__ import annotations

from carsdepo_assets.taxonomy import CLASS_NAMES
from carsdepo_assets_tests.fixtures.registry import BATCH, HEIGHT, WIDTH

__all__ = ["BATCH", "HEIGHT", "WIDTH", "well_formed"]


def well_formed(answer, width: int = WIDTH, height: int = HEIGHT) -> bool:
    """A non-empty list of detections with known labels, scores and in-image pixel boxes."""
    return isinstance(answer, list) and bool(answer) and all(
        d["label"] in CLASS_NAMES and 0.0 <= d["score"] <= 1.0
        and 0 <= d["box"][0] <= d["box"][2] <= width and 0 <= d["box"][1] <= d["box"][3] <= height
        for d in answer
    )
