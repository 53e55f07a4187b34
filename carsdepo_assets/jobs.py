"""Asset jobs: the units the CLI, the sensors and backfills launch."""

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.mlflow import end_mlflow_on_run_finished

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.assets("raw_images"),
    partitions_def=batch_partitions,
    description="Validate and store one batch of photos (raw_images) with its asset checks.",
)

labeling_job = define_asset_job(
    "labeling_job",
    selection=AssetSelection.assets("label_studio_tasks"),
    partitions_def=batch_partitions,
    description="Send a batch's stored photos to Label Studio as tasks (with the champion's "
    "pre-annotations when there is one).",
)

dataset_job = define_asset_job(
    "dataset_job",
    selection=AssetSelection.assets("annotations", "curated_dataset", "reference_profile"),
    description="Pull annotations from Label Studio, rebuild the curated COCO dataset, and "
    "refresh the drift reference (the champion's training data; the latest dataset while "
    "there is no champion).",
)

training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets(
        "detector", "evaluation_report", "deployed_model", "reference_profile"
    ),
    tags={"carsdepo/stage": "training"},
    hooks={end_mlflow_on_run_finished},
    description="Train a challenger, evaluate it against the champion, promote it if the "
    "quality gate passes, and profile the new champion's training data as the drift reference.",
)

monitoring_job = define_asset_job(
    "monitoring_job",
    selection=AssetSelection.assets("batch_profile", "drift_report", "retraining_decision"),
    partitions_def=batch_partitions,
    description="Profile a batch, measure its drift against the reference and decide.",
)

experimentation_job = define_asset_job(
    "experimentation_job",
    selection=AssetSelection.assets("experiment_sweep"),
    partitions_def=batch_partitions,
    tags={"carsdepo/stage": "training"},
    description="After a large drift: a sweep of detector configurations, never promoted.",
)

freshness_job = define_asset_job(
    "freshness_job",
    selection=AssetSelection.checks(AssetCheckKey(AssetKey("deployed_model"),
                                                  "champion_not_stale")),
    description="Evaluate the champion's freshness check.",
)

checks_job = define_asset_job(
    "checks_job",
    selection=AssetSelection.all_asset_checks(),
    description="Every asset check against the current state, nothing materialized. Launch it "
    'with the tag {"dagster/partition": "<batch>"}: per-batch checks evaluate that batch '
    "(`carsdepo check` runs it over a freshly built demo state).",
)

prediction_job = define_asset_job(
    "prediction_job",
    selection=AssetSelection.assets("batch_predictions"),
    partitions_def=batch_partitions,
    description="The champion's answers for one batch (batch_predictions), recorded in the "
    "inference log.",
)

kpi_job = define_asset_job(
    "kpi_job",
    selection=AssetSelection.assets("kpi_report"),
    description="Recompute the business KPI dashboard from the platform's records.",
)
