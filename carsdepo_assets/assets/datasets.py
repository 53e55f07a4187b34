"""``curated_dataset``: the newest annotation snapshot as a versioned, split COCO dataset.

The output value is the dataset folder (``str``); downstream assets call
``carsdepo_assets.datasets.load_dataset(Path(curated_dataset))``. The data version is the
dataset's content version, so Dagster sees when the data really changed.
"""

from collections import Counter

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from carsdepo_assets.datasets import SplitFractions, build_dataset
from carsdepo_assets.datasets.splits import beside_pinned_test
from carsdepo_assets.datasets.stats import (
    box_size_histogram,
    dataset_stats,
    sample_sheet,
    split_table_markdown,
)
from carsdepo_assets.labeling.history import load_latest_snapshot
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.taxonomy import CLASS_NAMES
from carsdepo_assets.visual import markdown_image, png_bytes


class CuratedDatasetConfig(Config):
    train_fraction: float = Field(default=0.7, description="Share of groups in train.")
    val_fraction: float = Field(default=0.15, description="Share of groups in val.")
    test_fraction: float = Field(
        default=0.15, description="Share of groups in test; it goes to train while some photos "
        "are pinned to the test split (a verified test batch), which alone is the test split.")
    sample_images: int = Field(default=6, description="Train images in the sample picture.")


@asset(
    group_name="datasets",
    deps=[AssetKey("annotations")],
    description=(
        "The newest annotation snapshot joined with the image store as a COCO dataset, split "
        "train/val/test by a hash of each image's group (stable as data grows), versioned by "
        "content under CARSDEPO_HOME/datasets/<version>/."
    ),
)
def curated_dataset(
    context: AssetExecutionContext, config: CuratedDatasetConfig, carsdepo_home: CarsdepoHome
) -> Output[str]:
    layout = carsdepo_home.layout
    try:
        snapshot = load_latest_snapshot(layout.annotations)
        if snapshot is None:
            raise FileNotFoundError(
                f"no annotation snapshot in {layout.annotations}: materialize `annotations` first"
            )
        fractions = beside_pinned_test(snapshot.images, SplitFractions(
            config.train_fraction, config.val_fraction, config.test_fraction))
    except (FileNotFoundError, ValueError) as error:
        raise Failure(str(error)) from error
    context.log.info(f"building from snapshot {snapshot.version} in {layout.annotations} "
                     f"({len(snapshot.images)} images)")
    dataset = build_dataset(snapshot, layout, fractions)
    stats = dataset_stats(dataset.cocos())
    skipped = Counter(item.reason for item in dataset.skipped)
    if dataset.skipped:
        context.log.warning(f"{len(dataset.skipped)} snapshot images left out: {dict(skipped)}")
    metadata = {
        "version": dataset.version,
        "path": MetadataValue.path(str(dataset.root)),
        "source_snapshot": snapshot.version,
        "images": stats.images,
        **{f"images_{name}": counts["images"] for name, counts in stats.counts.items()},
        **{f"instances_{name}": stats.instances(name) for name in CLASS_NAMES},
        "negatives_share": round(stats.negatives_share, 4),
        "missing_images": len(dataset.missing_images),
        "skipped_images": MetadataValue.json(dict(skipped)),
        "splits": MetadataValue.md(split_table_markdown(stats)),
        "box_sizes": MetadataValue.md(markdown_image(box_size_histogram(stats), "box sizes")),
    }
    sheet = sample_sheet(dataset, "train", config.sample_images)
    if sheet is not None:
        png = png_bytes(sheet, colors=256)
        metadata["samples"] = MetadataValue.md(markdown_image(png, "train samples"))
    return Output(str(dataset.root), metadata=metadata, data_version=DataVersion(dataset.version))
