"""KPIs computed from hand-made platform records, whose numbers are worked out by hand below,
and the ``kpi_report`` asset over the same records."""

from __future__ import annotations

import json

import mlflow
import pytest
from dagster import materialize
from mlflow.tracking import MlflowClient

from carsdepo_assets.assets.kpis import kpi_report
from carsdepo_assets.detection.champion import (
    ROLLED_BACK_AT_TAG,
    configure_mlflow,
    promote,
    rollback,
)
from carsdepo_assets.images.manifest import DUPLICATE, QUARANTINED, STORED, BatchManifest
from carsdepo_assets.images.manifest import ManifestRow as Row
from carsdepo_assets.labeling.history import write_snapshot
from carsdepo_assets.labeling.results import SOURCE_IMPORTED
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledBox, LabeledImage
from carsdepo_assets.prediction.inference_log import BATCH, CLI, REST, InferenceLog
from carsdepo_assets.prediction.inference_log import InferenceRecord as Record
from carsdepo_assets.prediction.kpis.collect import champion_history, collect_kpis
from carsdepo_assets.prediction.kpis.render import kpi_markdown
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import DENT, NONE_ANSWER, SCRATCH

S = {n: f"{n:064x}" for n in range(1, 9)}  # image hashes s1..s8
SCRATCH_BOX = {"label": SCRATCH, "score": 0.9, "box": [1, 1, 9, 9]}
DENT_BOX = {"label": DENT, "score": 0.8, "box": [2, 2, 8, 8]}


def labeled(n: int, boxes: tuple[str, ...], updated_at: str, source: str = "label_studio"):
    return LabeledImage(S[n], 64, 64, tuple(LabeledBox(b, (1, 1, 5, 5)) for b in boxes),
                        no_damage=not boxes, source=source, updated_at=updated_at)


@pytest.fixture
def records(empty_registry: StateLayout) -> StateLayout:
    """Batch a holds s1-s6, batch b s7, s8 and a copy of s5: 8 images held. The model answered
    s1-s5 and s7 (s6 could not be read); people labelled s1-s3, s8 arrived labelled."""
    layout = empty_registry
    BatchManifest("a", "/in/a", [Row(f"{n}.jpg", STORED, S[n]) for n in range(1, 7)]).save(
        layout.manifest_path("a"))
    BatchManifest("b", "/in/b", [Row("5.jpg", DUPLICATE, S[5]), Row("7.jpg", STORED, S[7]),
                                 Row("8.jpg", STORED, S[8]), Row("x.gif", QUARANTINED)]).save(
        layout.manifest_path("b"))
    answers = {"a": {1: NONE_ANSWER, 2: [SCRATCH_BOX], 3: [DENT_BOX],
                     4: [SCRATCH_BOX, DENT_BOX], 5: NONE_ANSWER, 6: None},
               "b": {7: NONE_ANSWER}}
    for batch, rows in answers.items():
        (layout.predictions / f"{batch}.jsonl").write_text("".join(
            json.dumps({"sha256": S[n], **({"error": "gone"} if damage is None
                                           else {"damage": damage})}) + "\n"
            for n, damage in rows.items()))
    write_snapshot(AnnotationSnapshot(images=[
        labeled(1, (SCRATCH,), "2026-01-05T10:00:00Z"),
        labeled(2, (), "2026-01-05T23:30:00-01:00"),  # 2026-01-06 in UTC
        labeled(3, (DENT,), "2026-01-06T08:00:00Z"),
        labeled(8, (SCRATCH, DENT), "2026-01-06T09:00:00Z", source=SOURCE_IMPORTED),
    ]), layout.annotations)
    InferenceLog(layout.inference_log).append(
        [Record(BATCH, "m", "1", S[n], latency, NONE_ANSWER) for n, latency in
         zip(range(1, 5), (10.0, 20.0, 30.0, 40.0), strict=True)]
        + [Record(REST, "m", "1", S[7], 100.0, NONE_ANSWER),
           Record(CLI, "m", "1", None, 5.0, None, error="not an image")])
    decisions = layout.reports / "decisions"
    decisions.mkdir(parents=True)
    for batch, action in (("a", "retrain"), ("b", "no_action"), ("c", "experiment")):
        (decisions / f"{batch}.json").write_text(json.dumps({"batch": batch, "action": action}))
    (decisions / "d.json").write_text("{half written")
    return layout


def test_kpis_from_the_platforms_records(records: StateLayout) -> None:
    report = collect_kpis(records)

    assert (report.images_held, report.labelled) == (8, 4)
    # decided by the model: s4, s5, s7; sent to annotators: s1-s3; pending: s6
    assert (report.decided_by_model, report.sent_to_annotators, report.pending) == (3, 3, 1)
    assert report.automation_rate == 0.5 and report.labelled_share == 0.5
    assert report.model_answers.images == {NONE_ANSWER: 3, SCRATCH: 1, DENT: 1,
                                           f"{SCRATCH}+{DENT}": 1}
    assert report.model_answers.boxes == {SCRATCH: 2, DENT: 2}
    assert report.labels.images == {NONE_ANSWER: 1, SCRATCH: 1, DENT: 1, f"{SCRATCH}+{DENT}": 1}
    assert report.annotations_per_day == {"2026-01-05": 1, "2026-01-06": 2}  # imported: not work
    assert report.annotations_per_active_day == 1.5
    latency = report.latency  # the failed cli answer has no latency worth counting
    assert (latency[BATCH].p50_ms, latency[BATCH].p95_ms) == (25.0, 38.5)
    assert (latency["all"].count, latency["all"].p50_ms, latency["all"].p95_ms) == (5, 30.0, 88.0)
    assert CLI not in latency
    assert report.decisions == {"experiment": 1, "no_action": 1, "retrain": 1}
    assert report.drift_alerts == 2
    assert any(note.startswith("decision d.json skipped") for note in report.notes)


def test_kpi_report_asset_shows_the_dashboard_and_saves_it(records: StateLayout) -> None:
    result = materialize([kpi_report], resources={
        "carsdepo_home": CarsdepoHome(path=str(records.root)), "model_registry": ModelRegistry()})

    metadata = result.asset_materializations_for_node("kpi_report")[0].metadata
    assert metadata["automation_rate"].value == 0.5
    assert metadata["drift_alerts"].value == 2
    dashboard = metadata["dashboard"].value
    assert "| Automation rate | 50.0% | 3 decided by the model, 3 sent to annotators, 1 pending |" \
        in dashboard
    assert "| Champion AP50 | n/a | no champion promoted yet |" in dashboard
    assert dashboard.count("data:image/png;base64,") == 4
    saved = records.reports / "kpis"
    assert sorted(path.name for path in saved.iterdir()) == [
        "annotation_throughput.png", "champion_ap.png", "damage_types.png", "dashboard.md",
        "inference_latency.png", "kpis.json"]
    assert json.loads((saved / "kpis.json").read_text())["headline"]["labelled_share"] == 0.5


def test_kpis_without_any_record_are_empty_and_say_why(carsdepo_home: StateLayout) -> None:
    report = collect_kpis(carsdepo_home)

    assert report.automation_rate is None and report.labelled_share is None
    assert report.latency == {} and report.drift_alerts == 0
    assert "| Labelled share | n/a | 0 of 0 images held |" in kpi_markdown(report)
    assert {note.split(" ")[1] for note in report.notes} >= {"stored", "batch", "annotation"}


def test_champion_history_follows_promotions_and_shows_a_rollback(
    empty_registry: StateLayout,
) -> None:
    configure_mlflow(empty_registry, "kpi-tests")
    client = MlflowClient()
    client.create_registered_model("m")
    for ap50, ap in ((0.6, 0.3), (0.8, 0.5), (0.9, 0.6)):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"test_AP50": ap50, "test_AP": ap})
        client.create_model_version("m", f"{run.info.artifact_uri}/model", run.info.run_id)
    promote("m", "1")
    promote("m", "2")  # version 3 is never promoted
    rollback("m")

    history = champion_history("m")

    assert [(p.version, p.metrics) for p in history] == [
        ("1", {"AP50": 0.6, "AP": 0.3}), ("2", {"AP50": 0.8, "AP": 0.5}),
        ("1", {"AP50": 0.6, "AP": 0.3})]
    assert [p.restored for p in history] == [False, False, True]
    assert history[-1].since == MlflowClient().get_model_version("m", "2").tags[ROLLED_BACK_AT_TAG]
