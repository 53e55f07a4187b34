"""``dataset_sensor``: a curated dataset with enough new labels trains a challenger.

It reads each new ``curated_dataset`` materialization (the cursor is the storage id of the last
one read) and counts its labelled train and val photos against those of the dataset the latest
``detector`` was trained on. When the newest dataset adds at least ``min_new_labels`` photos (or
any, before the first model) it requests ``training_job``, unless a training run started after that
dataset already exists (a drift decision's retrain, a person in the UI): one dataset, one
training.
"""

from datetime import UTC, datetime

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    EventLogRecord,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from carsdepo_assets.jobs import training_job

DATASETS = AssetKey("curated_dataset")
DETECTORS = AssetKey("detector")
DEFAULT_MIN_NEW_LABELS = 50
NOT_TRAINING = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def labelled_photos(record: EventLogRecord) -> int:
    """Train and val photos of a curated_dataset materialization."""
    metadata = record.asset_materialization.metadata
    return sum(int(metadata[key].value) for key in ("images_train", "images_val")
               if key in metadata)


def dataset_version(record: EventLogRecord) -> str:
    return str(record.asset_materialization.metadata["version"].value)


def build_dataset_sensor(min_new_labels: int = DEFAULT_MIN_NEW_LABELS) -> SensorDefinition:
    @sensor(
        name="dataset_sensor",
        job=training_job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"A new curated_dataset with at least {min_new_labels} more labelled "
        "photos than the latest detector's (any, before the first) -> training_job.",
    )
    def _dataset_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        instance = context.instance
        after = int(context.cursor) if context.cursor else None
        new = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=DATASETS, after_storage_id=after), limit=1,
            ascending=False,
        ).records
        if not new:
            return SkipReason("no new curated dataset")
        newest = new[0]
        cursor = str(newest.storage_id)
        version = dataset_version(newest)
        trained_on = trained_photos(instance)
        added = labelled_photos(newest) - (trained_on or 0)
        if added < (min_new_labels if trained_on is not None else 1):
            return SensorResult(skip_reason=f"dataset {version} adds {added} labelled photos to "
                                f"the latest detector's {trained_on or 0} (< {min_new_labels})",
                                cursor=cursor)
        started = instance.get_runs(RunsFilter(
            job_name=training_job.name,
            created_after=datetime.fromtimestamp(newest.timestamp, UTC),
        ), limit=1)
        if started and started[0].status not in NOT_TRAINING:
            return SensorResult(skip_reason=f"dataset {version} is already being trained on by "
                                f"run {started[0].run_id}", cursor=cursor)
        return SensorResult(
            run_requests=[RunRequest(
                run_key=f"dataset-{version}",
                tags={"carsdepo/dataset_version": version, "carsdepo/new_labels": str(added)},
            )],
            cursor=cursor,
        )

    return _dataset_sensor


def trained_photos(instance) -> int | None:
    """Labelled photos of the dataset the latest detector was trained on (None: no detector
    yet; 0: its dataset is no longer on record)."""
    detectors = instance.fetch_materializations(DETECTORS, limit=1, ascending=False).records
    if not detectors:
        return None
    version = detectors[0].asset_materialization.metadata.get("dataset_version")
    datasets = instance.fetch_materializations(DATASETS, limit=100, ascending=False).records
    for record in datasets:
        if version is not None and dataset_version(record) == version.value:
            return labelled_photos(record)
    return 0


dataset_sensor = build_dataset_sensor()
