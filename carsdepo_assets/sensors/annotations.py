"""``annotation_sensor``: new or changed annotations in Label Studio refresh the dataset.

Every ``minimum_interval_seconds`` (default 30; ``$CARSDEPO_ANNOTATION_SENSOR_INTERVAL``) it
asks Label Studio for completed annotations created or updated after its cursor. When there
are any, it requests ``dataset_job`` (annotations, curated_dataset, the drift reference) and
moves the cursor to the newest change, in the same result as the run request, so no change is
lost. Skips (the annotator pressed Skip) and deleted annotations do not trigger a run. With
Label Studio down it skips with the error as the reason and leaves the cursor as it was.
"""

import os

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from carsdepo_assets.jobs import dataset_job
from carsdepo_assets.resources.label_studio import (
    LabelStudioError,
    LabelStudioResource,
    LabelStudioUnavailable,
)

INTERVAL_ENV_VAR = "CARSDEPO_ANNOTATION_SENSOR_INTERVAL"
DEFAULT_INTERVAL_S = 30


def build_annotation_sensor(
    minimum_interval_seconds: int | None = None, name: str = "annotation_sensor"
) -> SensorDefinition:
    """The sensor with its polling interval (argument, else the env var, else 30 s)."""
    interval = minimum_interval_seconds or int(
        os.environ.get(INTERVAL_ENV_VAR) or DEFAULT_INTERVAL_S
    )

    @sensor(
        name=name,
        minimum_interval_seconds=interval,
        job=dataset_job,
        default_status=DefaultSensorStatus.RUNNING,
        description="Polls Label Studio; new or changed annotations -> dataset_job "
        "(annotations, curated_dataset).",
    )
    def _annotation_sensor(
        context: SensorEvaluationContext, label_studio: LabelStudioResource
    ) -> SensorResult | SkipReason:
        try:
            activity = label_studio.latest_annotation_update(since=context.cursor)
        except (LabelStudioUnavailable, LabelStudioError) as error:
            return SkipReason(f"cannot ask Label Studio for new annotations: {error}")
        if activity.changed == 0:
            return SkipReason(
                f"no annotation created or updated since {context.cursor or 'the beginning'}"
            )
        return SensorResult(
            run_requests=[RunRequest(
                run_key=f"annotations-{activity.latest}",
                tags={"carsdepo/trigger": "annotation_sensor",
                      "carsdepo/changed_annotations": str(activity.changed)},
            )],
            cursor=activity.latest,
        )

    return _annotation_sensor


annotation_sensor = build_annotation_sensor()
