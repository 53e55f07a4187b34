"""Real batches for the labeling tests: synthetic panels ingested into a state directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.state import PROJECT_ROOT, StateLayout
from carsdepo_assets.synth.dataset import SynthResult, generate_dataset

WIDTH, HEIGHT = 192, 160


def synthetic_batch(
    layout: StateLayout, folder: Path, batch: str, n_images: int = 4, seed: int = 1,
    clean_share: float = 0.25, duplicate: bool = False,
) -> tuple[BatchManifest, SynthResult]:
    """Generate ``n_images`` panels (ground truth in ``folder/annotations.json``) and ingest
    ``folder/images`` as ``batch``; ``duplicate`` adds a second copy of the first photo."""
    synth = generate_dataset(folder, n_images, seed, clean_share=clean_share,
                             width=WIDTH, height=HEIGHT)
    if duplicate:
        shutil.copyfile(synth.images_dir / "panel_00000.jpg", synth.images_dir / "copy.jpg")
    return ingest_batch(synth.images_dir, batch, layout), synth


LENSOR = PROJECT_ROOT.parent / "shared" / "data" / "lensor_car_damage"
requires_lensor = pytest.mark.skipif(
    not (LENSOR / "annotations" / "instances_test.json").is_file(),
    reason=f"the lensor car-damage data is not at {LENSOR}",
)
