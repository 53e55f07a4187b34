"""Asset jobs: the units the CLI, the sensors and backfills launch."""

from dagster import AssetSelection, define_asset_job

from carsdepo_assets.partitions import batch_partitions

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.assets("raw_images"),
    partitions_def=batch_partitions,
    description="Validate and store one batch of photos (raw_images) with its asset checks.",
)

dataset_job = define_asset_job(
    "dataset_job",
    selection=AssetSelection.assets("annotations", "curated_dataset"),
    description="Pull annotations from Label Studio and rebuild the curated COCO dataset.",
)

training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets("detector", "evaluation_report", "deployed_model"),
    tags={"carsdepo/stage": "training"},
    description="Train a challenger, evaluate it against the champion, promote it if the "
    "quality gate passes.",
)
