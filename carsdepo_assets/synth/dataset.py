"""Synthetic data sets: photos of car panels with ground truth as a COCO file.

Image ``i`` of seed ``s`` is drawn from its own random stream, seeded by ``(s, i)``: the same
seed always gives the same bytes, and an image does not depend on how many others are made.
Within an image, the panel, its damage and the camera each have their own child stream, so the
same panel can be rendered with and without damage, or under another lighting, pixel for pixel.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from carsdepo_assets.fileio import atomic_write_bytes, atomic_write_json
from carsdepo_assets.synth.damage import Box, Canvas, sample_damage
from carsdepo_assets.synth.lighting import Lighting, develop, meter, resolve_lighting
from carsdepo_assets.synth.panel import sample_scene, shade, surface_slopes
from carsdepo_assets.taxonomy import CATEGORY_ID_BY_NAME, CLASS_NAMES, coco_categories

IMAGES_FOLDER = "images"
ANNOTATIONS_FILE = "annotations.json"
JPEG_QUALITY = 90
MIN_SIDE = 160  # smaller photos leave no room for damage of a learnable size
MAX_SIDE = 8192
_DAMAGE_TRIES = 5
# Generated photos, and temporary files an interrupted atomic write may have left behind.
_GENERATED_NAME = re.compile(r"panel_\d{5,}\.jpg|\.panel_\d{5,}\.jpg\..+\.tmp")


@dataclass(frozen=True)
class SynthResult:
    """What ``generate_dataset`` wrote."""

    out_dir: Path
    annotations_path: Path
    n_images: int
    n_clean: int
    instances_per_class: dict[str, int] = field(default_factory=dict)

    @property
    def images_dir(self) -> Path:
        return self.out_dir / IMAGES_FOLDER


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of data set ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def render_panel(
    rng: np.random.Generator,
    width: int,
    height: int,
    lighting: str | Lighting = "normal",
    damaged: bool = True,
) -> tuple[Image.Image, list[tuple[str, Box]]]:
    """One photo of a car panel and its damage as (label, (x, y, w, h)) boxes.

    With ``damaged=False`` the result is the same panel, pixel for pixel, without damage, when
    given a generator in the same state. A damaged panel has one to three visible damages
    (should none be visible after several tries, the list is empty, as for a clean panel).
    """
    _check_size(width, height)
    photo = resolve_lighting(lighting)
    panel_rng, damage_rng, camera_rng = rng.spawn(3)
    scene = sample_scene(panel_rng, width, height)
    slopes = surface_slopes(scene)
    radiance = shade(scene, *slopes)
    metered = meter(radiance)  # before any damage, so a clean twin is exposed identically
    canvas = Canvas(scene, slopes, radiance, metered)
    drawn: list[tuple[str, Box]] = []
    for _ in range(_DAMAGE_TRIES if damaged else 0):
        for damage in sample_damage(damage_rng, scene):
            box = damage.draw(canvas)  # None: too subtle, so left out
            if box is not None:
                drawn.append((damage.label, box))
        if drawn:
            break
    return Image.fromarray(develop(radiance, photo, camera_rng, metered)), drawn


def generate_dataset(
    out_dir: Path,
    n_images: int,
    seed: int,
    lighting: str | Lighting = "normal",
    clean_share: float = 0.25,
    width: int = 640,
    height: int = 480,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write ``n_images`` panel photos to ``out_dir/images/`` and their COCO ground truth.

    Each image is clean (ground truth "None": no annotations) with probability
    ``clean_share``. Files are written atomically; ``annotations.json`` is written last, so a
    folder with it is complete. Regenerating into the same folder replaces earlier generated
    files, but an unrelated file in ``images/`` is an error rather than something to lose.
    ``progress(done, total)`` is called after each image.
    """
    out_dir = Path(out_dir)
    photo = resolve_lighting(lighting)
    _check_arguments(n_images, seed, clean_share)
    _check_size(width, height)
    images_dir = out_dir / IMAGES_FOLDER
    annotations_path = out_dir / ANNOTATIONS_FILE
    _check_destination(images_dir)
    annotations_path.unlink(missing_ok=True)  # first: an interrupted run leaves no stale truth
    for stale in images_dir.iterdir() if images_dir.is_dir() else ():
        stale.unlink()

    coco_images: list[dict] = []
    coco_annotations: list[dict] = []
    for index in range(n_images):
        rng = image_rng(seed, index)
        damaged = bool(rng.random() >= clean_share)
        image, boxes = render_panel(rng, width, height, photo, damaged)
        file_name = f"panel_{index:05d}.jpg"
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        atomic_write_bytes(images_dir / file_name, buffer.getvalue())
        coco_images.append(
            {"id": index + 1, "file_name": file_name, "width": width, "height": height}
        )
        for label, (x, y, w, h) in boxes:
            coco_annotations.append(
                {
                    "id": len(coco_annotations) + 1,
                    "image_id": index + 1,
                    "category_id": CATEGORY_ID_BY_NAME[label],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        if progress is not None:
            progress(index + 1, n_images)

    atomic_write_json(
        annotations_path,
        {
            "info": {
                "description": "carsdepo synthetic car-panel damage",
                "seed": seed,
                "lighting": photo.name,
                "lighting_parameters": asdict(photo),
                "clean_share": clean_share,
            },
            "licenses": [],
            "images": coco_images,
            "annotations": coco_annotations,
            "categories": coco_categories(),
        },
    )
    damaged_ids = {annotation["image_id"] for annotation in coco_annotations}
    per_class = Counter(annotation["category_id"] for annotation in coco_annotations)
    return SynthResult(
        out_dir=out_dir,
        annotations_path=annotations_path,
        n_images=n_images,
        n_clean=n_images - len(damaged_ids),
        instances_per_class={
            name: per_class.get(CATEGORY_ID_BY_NAME[name], 0) for name in CLASS_NAMES
        },
    )


def _check_arguments(n_images: int, seed: int, clean_share: float) -> None:
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not 0.0 <= clean_share <= 1.0:
        raise ValueError(f"clean_share must be between 0 and 1, got {clean_share}")


def _check_size(width: int, height: int) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValueError(
            f"image size {width}x{height} is outside {MIN_SIDE}..{MAX_SIDE} pixels per side"
        )


def _check_destination(images_dir: Path) -> None:
    """Refuse to mix generated photos with files that were not generated here."""
    if images_dir.exists() and not images_dir.is_dir():
        raise NotADirectoryError(f"{images_dir} exists and is not a folder")
    if not images_dir.is_dir():
        return
    foreign = sorted(
        entry.name for entry in images_dir.iterdir() if not _GENERATED_NAME.fullmatch(entry.name)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{images_dir} holds files the generator did not write ({shown}); "
            "choose an empty or a previously generated folder"
        )
