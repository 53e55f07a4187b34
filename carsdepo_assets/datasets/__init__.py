"""Curated COCO datasets: group-aware hash-stable splits, content-hash versions, stats, rules.

No Dagster here; ``assets/datasets.py`` and ``checks/datasets.py`` wire it in.
"""

from carsdepo_assets.datasets.coco import (
    CuratedDataset,
    SkippedImage,
    SplitFiles,
    build_dataset,
    find_image,
    latest_dataset,
    load_dataset,
)
from carsdepo_assets.datasets.splits import SPLITS, SplitFractions, assign_splits, split_of

__all__ = [
    "SPLITS",
    "CuratedDataset",
    "SkippedImage",
    "SplitFiles",
    "SplitFractions",
    "assign_splits",
    "build_dataset",
    "find_image",
    "latest_dataset",
    "load_dataset",
    "split_of",
]
