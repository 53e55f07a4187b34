"""`carsdepo check`: which assets the demo state needs, the simulated annotations it uses, and
when it fails CI. (`make test` runs the whole command after pytest.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from carsdepo_assets.cli.check import (
    FAILED,
    NOT_RUN,
    PASSED,
    CheckOutcome,
    CheckReport,
    state_selection,
)
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.labeling.coco_import import parse_coco
from carsdepo_assets.labeling.simulated import AnnotatorProfile, simulated_snapshot
from carsdepo_assets.synth import generate_dataset


@pytest.fixture(scope="module")
def defs():
    from carsdepo_assets.definitions import defs

    return defs


def outcome(status: str, severity: str) -> CheckOutcome:
    return CheckOutcome("curated_dataset", f"{status}-{severity}", None, status, severity)


@pytest.mark.parametrize(("status", "severity", "ok"), [
    (PASSED, "ERROR", True),
    (FAILED, "WARN", True),
    (FAILED, "ERROR", False),
    (NOT_RUN, "-", False),
])
def test_report_fails_on_error_severity_failures_and_checks_that_did_not_run(
    status, severity, ok
):
    report = CheckReport(home=Path("/state"), outcomes=[outcome(PASSED, "ERROR"),
                                                        outcome(status, severity)])

    assert report.ok is ok
    assert report.summary().startswith("OK" if ok else "FAILED")
    assert f"{status.upper()}" in report.table()


def test_a_build_error_fails_the_report_even_when_every_check_passed():
    report = CheckReport(home=Path("/state"), outcomes=[outcome(PASSED, "ERROR")],
                         build_errors=["detector: loss diverged"])

    assert not report.ok
    assert "build error: detector: loss diverged" in report.summary()


def test_demo_state_builds_what_checks_look_at_without_label_studio(defs):
    graph = defs.resolve_asset_graph()
    selected = {key.to_user_string() for key in state_selection(defs).resolve(graph)}

    assert {"curated_dataset", "detector", "evaluation_report", "deployed_model",
            "drift_report"} <= selected
    assert not selected & {"annotations", "label_studio_tasks", "label_studio_project",
                           "raw_images", "experiment_sweep"}
    checked = {key.asset_key.to_user_string() for key in graph.asset_check_keys}
    assert checked - selected <= {"raw_images", "annotations"}


def test_checks_job_selects_every_asset_check_and_no_asset(defs):
    job = defs.resolve_job_def("checks_job")
    checks = defs.resolve_asset_graph().asset_check_keys
    steps = sorted(job.graph.node_dict)  # one op per check

    assert len(steps) == len(checks)
    assert all(any(step.endswith(f"_{key.name}") for step in steps) for key in checks)
    assert not job.asset_layer.selected_asset_keys


def test_simulated_annotations_label_the_batchs_stored_images_like_an_annotator(carsdepo_home,
                                                                                tmp_path):
    synth = generate_dataset(tmp_path / "synth", n_images=12, seed=3, width=256, height=192)
    manifest = ingest_batch(synth.images_dir, "b1", carsdepo_home)

    snapshot = simulated_snapshot(manifest, parse_coco(synth.annotations_path),
                                  AnnotatorProfile(seed=0))

    stored = set(manifest.image_hashes())
    labelled = {image.sha256 for image in snapshot.images}
    assert labelled <= stored and len(labelled) >= len(stored) - 3  # a few tasks skipped
    # a negative is an image without a box drawn: a clean panel, or one whose boxes were missed
    assert all(image.no_damage == (not image.boxes) for image in snapshot.images)
    assert sum(image.no_damage for image in snapshot.images) >= synth.n_clean - 3
    assert all(box.bbox[2] > 0 and box.bbox[3] > 0
               for image in snapshot.images for box in image.boxes)
