"""Synthetic car-panel photos with scratches and dents, and their COCO ground truth.

Plain Python (numpy and Pillow); no Dagster. Entry points: ``generate_dataset`` for a folder of
photos plus ``annotations.json``, ``render_panel`` for one photo in memory.
"""

from carsdepo_assets.synth.dataset import SynthResult, generate_dataset, image_rng, render_panel
from carsdepo_assets.synth.lighting import LIGHTING_PRESETS, Lighting

__all__ = [
    "LIGHTING_PRESETS",
    "Lighting",
    "SynthResult",
    "generate_dataset",
    "image_rng",
    "render_panel",
]
