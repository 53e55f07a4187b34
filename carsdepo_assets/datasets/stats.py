"""What a curated dataset holds, as numbers, a table and pictures for the Dagster UI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from carsdepo_assets.datasets.coco import CuratedDataset, split_counts
from carsdepo_assets.taxonomy import CLASS_NAMES
from carsdepo_assets.visual import contact_sheet, draw_boxes, histogram_png

BOX_SIZE_BINS = [step / 20 for step in range(21)]  # 0 .. 1 in steps of 5 %


@dataclass(frozen=True)
class DatasetStats:
    counts: dict[str, dict]  # split -> coco.split_counts(...)
    box_sides: dict[str, list[float]]  # class -> longest box side / longest image side

    @property
    def images(self) -> int:
        return sum(counts["images"] for counts in self.counts.values())

    @property
    def negatives_share(self) -> float:
        negatives = sum(counts["negatives"] for counts in self.counts.values())
        return negatives / self.images if self.images else 0.0

    def instances(self, name: str) -> int:
        return sum(counts["instances"][name] for counts in self.counts.values())


def dataset_stats(cocos: Mapping[str, dict]) -> DatasetStats:
    """Counts per split and relative box sizes per class (all splits) of split COCO dicts."""
    box_sides: dict[str, list[float]] = {name: [] for name in CLASS_NAMES}
    for coco in cocos.values():
        names = {category["id"]: category["name"] for category in coco["categories"]}
        longest_side = {image["id"]: max(image["width"], image["height"])
                        for image in coco["images"]}
        for annotation in coco["annotations"]:
            _, _, width, height = annotation["bbox"]
            box_sides[names[annotation["category_id"]]].append(
                max(width, height) / longest_side[annotation["image_id"]]
            )
    return DatasetStats(
        counts={name: split_counts(coco) for name, coco in cocos.items()},
        box_sides=box_sides,
    )


def split_table_markdown(stats: DatasetStats) -> str:
    """One row per split (and a total): images, annotated, negatives, instances per class."""
    header = ["split", "images", "annotated", "negatives", *CLASS_NAMES]
    rows = [
        [name, counts["images"], counts["annotated_images"], counts["negatives"],
         *(counts["instances"][cls] for cls in CLASS_NAMES)]
        for name, counts in stats.counts.items()
    ]
    totals = (sum(row[column] for row in rows) for column in range(1, len(header)))
    rows.append(["**total**", *totals])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def box_size_histogram(stats: DatasetStats) -> bytes:
    return histogram_png(
        stats.box_sides, BOX_SIZE_BINS,
        title="Box size per class", xlabel="longest box side / longest image side",
    )


def sample_sheet(
    dataset: CuratedDataset, split: str = "train", count: int = 6, thumb_size: int = 192
) -> Image.Image | None:
    """A few images of a split with their boxes drawn (annotated ones first); None if empty."""
    coco = dataset.coco(split)
    names = {category["id"]: category["name"] for category in coco["categories"]}
    boxes_by_image: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        boxes_by_image.setdefault(annotation["image_id"], []).append(annotation)
    chosen = sorted(coco["images"], key=lambda image: image["id"] not in boxes_by_image)[:count]
    if not chosen:
        return None
    drawn = []
    for image in chosen:  # shrink first, then draw, so boxes and captions stay legible
        annotations = boxes_by_image.get(image["id"], [])
        with Image.open(dataset.image_root / image["file_name"]) as picture:
            thumb = picture.convert("RGB")
        thumb.thumbnail((thumb_size, thumb_size), Image.Resampling.LANCZOS)
        scale = thumb.width / image["width"]
        drawn.append(draw_boxes(
            thumb,
            [(x * scale, y * scale, (x + w) * scale, (y + h) * scale)
             for x, y, w, h in (a["bbox"] for a in annotations)],
            [names[a["category_id"]] for a in annotations],
        ))
    return contact_sheet(drawn, columns=3, thumb_size=thumb_size)
