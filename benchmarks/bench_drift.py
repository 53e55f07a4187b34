"""Drift detection measured: which shifts each signal catches, at which batch size.

For synthetic panels (``carsdepo_assets.synth``) and, when present, the real lensor photos
(``../shared/data/lensor_car_damage``, read in place), a reference of normal photos is profiled
and shifted batches are drawn from photos the reference never saw: clean ones (the false-alarm
rate), lighting shifts, blur, a colour cast, heavy JPEG, close-up and zoomed-out framing, a new
background, a watermark banner, a small rotation, and two shifts that keep every light and
colour statistic while the content changes (the photo turned to portrait, its tiles shuffled).

Each batch is decided by the production rule (``drift_report`` + ``decide``) twice: on today's
light features alone, and with the content signal (backbone embeddings reduced by a PCA fitted
on the reference). A batch is *flagged* when the decision is not ``no_action``. One JSON line
per source, shift, batch size and feature set goes to ``benchmarks/results/drift.jsonl``: the
flagged share in percent over ``--trials`` random batches, how often each action was decided,
and per signal how often it moved in the flagged batches.

The embedding backbone is the packaged ImageNet-pretrained EfficientNet-Lite0 (no detector is
trained here); in production the champion's own backbone is used the same way.

    .venv/bin/python -m benchmarks.bench_drift                      # everything, 15-25 minutes
    .venv/bin/python -m benchmarks.bench_drift --quick              # a smoke run

On a shared machine, one source and a few shifts per invocation keep each run near 5 minutes
(the recorded results: clean batches with ``--trials 100``, every shift with ``--trials 40``)::

    .venv/bin/python -m benchmarks.bench_drift --sources lensor --shifts clean --trials 100
    .venv/bin/python -m benchmarks.bench_drift --sources lensor --trials 40 \
        --shifts dim very_dim blur colour_cast heavy_jpeg close_up
"""

from __future__ import annotations

import argparse
import io
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from benchmarks._record import record
from carsdepo_assets.detection.embeddings import ImageEmbedder
from carsdepo_assets.monitoring.decision import NO_ACTION, decide
from carsdepo_assets.monitoring.drift import SIGNALS, drift_report
from carsdepo_assets.monitoring.embedding import fit_reference_content
from carsdepo_assets.monitoring.features import image_features
from carsdepo_assets.monitoring.profiles import profile_rows
from carsdepo_assets.synth import image_rng, render_panel

LENSOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "lensor_car_damage"
SYNTH_SIZE = (320, 240)
UPLOAD_QUALITY = 92
LIGHT, WITH_CONTENT = "light", "light+content"
Shift = Callable[[Image.Image, np.random.Generator], Image.Image]


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _mean_colour(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(axis=0))


def blur(image, rng):
    return image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 160))


def colour_cast(image, rng):
    pixels = np.asarray(image, dtype=np.float32) * np.array([1.12, 1.0, 0.85], np.float32)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def heavy_jpeg(image, rng):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=8)
    return Image.open(buffer).convert("RGB")


def close_up(image, rng):
    """Another photographer's framing: the middle half of the photo, enlarged."""
    width, height = image.size
    box = (width // 4, height // 4, width - width // 4, height - height // 4)
    return image.crop(box).resize(image.size, Image.Resampling.BILINEAR)


def zoomed_out(image, rng):
    """The panel small in the frame, on a blurred enlargement of itself (its own colours)."""
    width, height = image.size
    canvas = image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 20))
    small = _scaled(image, 0.55)
    canvas.paste(small, ((width - small.width) // 2, (height - small.height) // 2))
    return canvas


def new_background(image, rng):
    """The panel at 70% on a textured backdrop of the photo's own mean colour."""
    width, height = image.size
    mean = np.array(_mean_colour(image), dtype=np.float32)
    stripes = 0.75 + 0.5 * ((np.arange(width) // max(4, width // 24)) % 2)
    noise = rng.normal(1.0, 0.08, (height, width, 1)).astype(np.float32)
    backdrop = (mean * stripes[None, :, None] * noise).clip(0, 255).astype(np.uint8)
    canvas = Image.fromarray(backdrop)
    small = _scaled(image, 0.7)
    canvas.paste(small, (int(rng.integers(0, width - small.width + 1)),
                         int(rng.integers(0, height - small.height + 1))))
    return canvas


def watermark(image, rng):
    """A white dealer banner across the bottom with dark lettering."""
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    top = int(height * 0.86)
    draw.rectangle((0, top, width, height), fill=(250, 250, 250))
    draw.text((width // 20, top + (height - top) // 4), "AUTO DEALER  +49 000 0000",
              fill=(20, 20, 20))
    return canvas


def rotation(image, rng):
    angle = float(rng.choice([-1, 1]) * rng.uniform(12, 20))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=_mean_colour(image))


def portrait(image, rng):
    """Turned by 90 degrees: the same pixels, so every light and colour statistic is kept."""
    return image.transpose(Image.Transpose.ROTATE_90)


def shuffled_tiles(image, rng):
    """A 4x4 grid of tiles in random order: the same pixel histogram, another picture."""
    width, height = image.size
    tile_w, tile_h = width // 4, height // 4
    tiles = [image.crop((x * tile_w, y * tile_h, (x + 1) * tile_w, (y + 1) * tile_h))
             for y in range(4) for x in range(4)]
    canvas = image.copy()
    for slot, index in enumerate(rng.permutation(len(tiles))):
        canvas.paste(tiles[index], ((slot % 4) * tile_w, (slot // 4) * tile_h))
    return canvas


def dim(image, rng):
    """Darker photos: today's moderate lighting shift (retrain). Synthetic photos are rendered
    in the generator's "dim" preset instead, as the demo's dim batch is."""
    return ImageEnhance.Brightness(image).enhance(0.86)


def very_dim(image, rng):
    """Far darker, noisier photos: today's strong lighting shift (experiment). Synthetic ones
    are rendered in the generator's "very-dim" preset."""
    pixels = np.asarray(image, dtype=np.float32) * 0.3
    pixels += rng.normal(0.0, 6.0, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


SHIFTS: dict[str, Shift | None] = {
    "clean": None, "dim": dim, "very_dim": very_dim, "blur": blur, "colour_cast": colour_cast,
    "heavy_jpeg": heavy_jpeg, "close_up": close_up, "zoomed_out": zoomed_out,
    "new_background": new_background, "watermark": watermark, "rotation": rotation,
    "portrait": portrait, "shuffled_tiles": shuffled_tiles,
}


def as_upload(image: Image.Image) -> Image.Image:
    """JPEG-encoded like a real upload, decoded again."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=UPLOAD_QUALITY)
    return Image.open(buffer).convert("RGB")


# Synthetic lighting shifts are rendered by the generator in the demo's lighting presets (its
# dim and very dim batches) rather than applied to finished photos.
SYNTH_LIGHTING = {"dim": "dim", "very_dim": "very-dim"}


def synthetic_photos(seed: int, count: int, lighting: str = "normal") -> Iterator[Image.Image]:
    for index in range(count):
        rng = image_rng(seed, index)
        image, _ = render_panel(rng, *SYNTH_SIZE, lighting, damaged=bool(rng.random() >= 0.25))
        yield image


def lensor_photos(splits: tuple[str, ...], count: int, seed: int) -> Iterator[Image.Image]:
    paths = sorted(path for split in splits for path in (LENSOR / "images" / split).glob("*.jpg"))
    if len(paths) < count:
        raise SystemExit(f"the lensor {'+'.join(splits)} split(s) hold {len(paths)} photos, "
                         f"fewer than the {count} asked for")
    for index in np.random.default_rng(seed).permutation(len(paths))[:count]:
        with Image.open(paths[index]) as image:
            image.draft("RGB", (640, 640))
            yield image.convert("RGB")


class FeatureTable:
    """Light features and raw embeddings of a set of photos, computed once."""

    def __init__(self, photos: list[Image.Image], embedder: ImageEmbedder):
        self.light = [image_features(photo) for photo in photos]
        self.embeddings = np.concatenate(
            [embedder.embed(photos[start:start + 16]) for start in range(0, len(photos), 16)])

    def rows(self, projection, picks) -> tuple[list[dict], list[dict]]:
        light = [self.light[i] for i in picks]
        content = projection.project(self.embeddings[picks])
        names = projection.feature_names
        both = [{**row, **dict(zip(names, map(float, values), strict=True))}
                for row, values in zip(light, content, strict=True)]
        return light, both


def run_source(source: str, reference: list[Image.Image],
               unseen: Callable[[str], tuple[list[Image.Image], bool]],
               embedder: ImageEmbedder, args) -> None:
    """``unseen(shift)``: the unseen photos for a shift, and whether the shift is already in
    them (rendered so) rather than to be applied."""
    reference_table = FeatureTable([as_upload(photo) for photo in reference], embedder)
    projection, content = fit_reference_content(reference_table.embeddings, args.components)
    profiles = {LIGHT: profile_rows(reference_table.light),
                WITH_CONTENT: profile_rows({**light, **values} for light, values
                                           in zip(reference_table.light, content, strict=True))}
    data = (f"{source}: reference {len(reference)} photos, {args.unseen} unseen photos per "
            f"shift, {args.trials} random batches per size; embedding "
            f"{embedder.source}, {projection.components.shape[0]} PCA components "
            f"({100 * projection.explained_variance:.0f}% of the variance) fitted on half the "
            "reference, profiled on the other half; taken "
            "on a shared machine (rates do not depend on load)")
    for shift_name in args.shifts:
        originals, rendered = unseen(shift_name)
        shift = None if rendered else SHIFTS[shift_name]
        rng = np.random.default_rng(args.seed)
        photos = [as_upload(shift(photo, rng) if shift else photo) for photo in originals]
        table = FeatureTable(photos, embedder)
        for size in args.sizes:
            actions = {LIGHT: Counter(), WITH_CONTENT: Counter()}
            moved: Counter[str] = Counter()
            for trial in range(args.trials):
                picks = np.random.default_rng([args.seed, size, trial]).choice(
                    len(photos), size, replace=False)
                for variant, rows in zip((LIGHT, WITH_CONTENT), table.rows(projection, picks),
                                         strict=True):
                    report = drift_report(profiles[variant], profile_rows(rows))
                    action = decide(report).action
                    actions[variant][action] += 1
                    if action != NO_ACTION and variant == WITH_CONTENT:
                        moved.update(report.moved_signals)
            for variant, counts in actions.items():
                flagged = args.trials - counts[NO_ACTION]
                record("drift", f"{source}/{shift_name}/n{size}/{variant}",
                       round(100.0 * flagged / args.trials, 1), "% flagged", data,
                       source=source, shift=shift_name, batch_size=size, features=variant,
                       trials=args.trials, actions=dict(counts),
                       moved={signal: moved[signal] for signal in SIGNALS}
                       if variant == WITH_CONTENT else None)


def synthetic_source(args) -> tuple[list[Image.Image], Callable]:
    """Reference and unseen panels; lighting shifts rendered by the generator."""
    reference = list(synthetic_photos(args.seed, args.reference))
    normal = list(synthetic_photos(args.seed + 1000, args.unseen))

    def unseen(shift: str) -> tuple[list[Image.Image], bool]:
        if shift in SYNTH_LIGHTING:
            return list(synthetic_photos(args.seed + 1000, args.unseen,
                                         SYNTH_LIGHTING[shift])), True
        return normal, False

    return reference, unseen


def lensor_source(args) -> tuple[list[Image.Image], Callable]:
    """Reference from the train split, unseen photos from the val and test splits."""
    reference = list(lensor_photos(("train",), args.reference, args.seed))
    test_photos = list(lensor_photos(("val", "test"), args.unseen, args.seed))
    return reference, lambda shift: (test_photos, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=200, help="reference photos (200)")
    parser.add_argument("--unseen", type=int, default=150,
                        help="unseen photos each shift is applied to (150)")
    parser.add_argument("--trials", type=int, default=40, help="random batches per size (40)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--components", type=int, default=16, help="PCA components (16)")
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    parser.add_argument("--sources", nargs="+", default=["synthetic", "lensor"],
                        choices=["synthetic", "lensor"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, for a smoke run (figures mean nothing)")
    args = parser.parse_args()
    if args.quick:
        args.reference, args.unseen, args.trials, args.sizes = 40, 30, 3, [25]
    if max(args.sizes) > args.unseen:
        parser.error(f"--unseen {args.unseen} is smaller than the largest batch size")
    torch.set_num_threads(1)  # leave the other cores to whoever shares the machine
    embedder = ImageEmbedder.imagenet()
    for source in args.sources:
        started = time.perf_counter()
        if source == "lensor" and not (LENSOR / "images").is_dir():
            print(f"lensor photos not found at {LENSOR}: skipped")
            continue
        reference, unseen = (synthetic_source if source == "synthetic" else lensor_source)(args)
        run_source(source, reference, unseen, embedder, args)
        print(f"{source}: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
