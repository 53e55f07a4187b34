"""``annotation_sensor``: its cursor moves only with a run request, and survives an outage."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import SensorResult, SkipReason, build_sensor_context

from carsdepo_assets.labeling.results import box_results, no_damage_result
from carsdepo_assets.labeling.snapshot import LabeledBox
from carsdepo_assets.labeling.tasks import batch_task_data
from carsdepo_assets.resources.label_studio import LabelStudioResource
from carsdepo_assets.sensors.annotations import annotation_sensor, build_annotation_sensor
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import free_port
from carsdepo_assets_tests.labeling.batches import HEIGHT, WIDTH, synthetic_batch


def evaluate(label_studio: LabelStudioResource, cursor: str | None):
    context = build_sensor_context(cursor=cursor, resources={"label_studio": label_studio})
    return annotation_sensor(context)


@pytest.mark.label_studio
def test_new_or_changed_annotations_request_a_run_and_move_the_cursor(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    manifest, _ = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=2)
    label_studio.import_tasks(
        batch_task_data(manifest, carsdepo_home.images,
                        label_studio.document_root(carsdepo_home.images)),
        carsdepo_home.images,
    )
    first, second = label_studio.list_tasks()

    idle = evaluate(label_studio, None)
    assert isinstance(idle, SkipReason) and "no annotation" in idle.skip_message

    label_studio.submit_annotation(first.id, no_damage_result())
    label_studio.submit_annotation(second.id, [], skipped=True)  # a skip is no new label
    fired = evaluate(label_studio, None)
    assert isinstance(fired, SensorResult) and fired.cursor is not None
    (request,) = fired.run_requests
    assert request.job_name in (None, "dataset_job")  # the sensor's own job
    assert request.tags["carsdepo/changed_annotations"] == "1"

    quiet = evaluate(label_studio, fired.cursor)
    assert isinstance(quiet, SkipReason) and "no annotation" in quiet.skip_message

    label_studio.submit_annotation(
        second.id, box_results([LabeledBox("dent", (5, 5, 30, 30))], WIDTH, HEIGHT)
    )
    again = evaluate(label_studio, fired.cursor)
    assert isinstance(again, SensorResult) and again.cursor > fired.cursor
    assert again.run_requests[0].run_key != request.run_key


def test_with_label_studio_down_the_sensor_skips_with_the_error_and_keeps_its_cursor():
    url = f"http://127.0.0.1:{free_port()}"
    down = LabelStudioResource(url=url, api_key="carsdepo-test-token")
    cursor = "2026-01-01T00:00:00+00:00"
    context = build_sensor_context(cursor=cursor, resources={"label_studio": down})

    outcome = annotation_sensor(context)

    assert isinstance(outcome, SkipReason) and url in outcome.skip_message
    assert context.cursor == cursor


def test_poll_interval_defaults_to_30_s_and_is_configurable(monkeypatch: pytest.MonkeyPatch):
    assert annotation_sensor.minimum_interval_seconds == 30
    assert build_annotation_sensor(5).minimum_interval_seconds == 5
    monkeypatch.setenv("CARSDEPO_ANNOTATION_SENSOR_INTERVAL", "120")
    assert build_annotation_sensor().minimum_interval_seconds == 120
