"""The champion_not_stale check, evaluated by a real freshness_job run over a real registry.

The rule itself is unit-tested in monitoring/test_decision.py; these runs prove that the check
reads the champion's registration time from MLflow and the newest annotation from the latest
snapshot, and that it flips as the policy's age limit is crossed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from carsdepo_assets.cli.runner import run_job
from carsdepo_assets.labeling.history import write_snapshot
from carsdepo_assets.labeling.snapshot import AnnotationSnapshot, LabeledImage
from carsdepo_assets.state import StateLayout

TINY_LIMIT_DAYS = 1e-6  # about 0.09 s: any champion registered before the test is older


def annotated_at(layout: StateLayout, moment: datetime) -> None:
    """A latest annotation snapshot whose one annotation was updated at ``moment``."""
    image = LabeledImage(sha256="a" * 64, width=64, height=48, boxes=(), no_damage=True,
                         updated_at=moment.isoformat())
    write_snapshot(AnnotationSnapshot(images=[image]), layout.annotations)


def freshness(layout: StateLayout, max_age_days: float | None = None):
    """(passed, severity, description) of champion_not_stale in a freshness_job run."""
    run_config = {}
    if max_age_days is not None:
        run_config = {"resources": {"drift_policy": {"config": {
            "champion_max_age_days": max_age_days}}}}
    result = run_job("freshness_job", layout, run_config=run_config)
    (evaluation,) = [e for e in result.get_asset_check_evaluations()
                     if e.check_name == "champion_not_stale"]
    return evaluation.passed, evaluation.severity.value, evaluation.description


def test_no_champion_while_annotations_exist_is_stale(empty_registry):
    annotated_at(empty_registry, datetime.now(UTC))

    passed, severity, description = freshness(empty_registry)

    assert not passed and severity == "WARN"
    assert "no champion" in description


def test_champion_turns_stale_past_the_age_limit_when_newer_annotations_wait(champion,
                                                                              carsdepo_home):
    annotated_at(carsdepo_home, datetime.now(UTC))

    fresh = freshness(carsdepo_home)  # default limit: 14 days
    stale = freshness(carsdepo_home, TINY_LIMIT_DAYS)

    assert fresh[0] is True and "limit 14 days" in fresh[2]
    assert stale[0] is False and stale[1] == "WARN"
    assert "annotations up to" in stale[2]


def test_old_champion_is_not_stale_without_newer_annotations(champion, carsdepo_home):
    annotated_at(carsdepo_home, datetime(2020, 1, 1, tzinfo=UTC))

    passed, _, description = freshness(carsdepo_home, TINY_LIMIT_DAYS)

    assert passed is True
    assert "no annotation is newer" in description
