"""The monitoring page's records: decisions the real monitoring assets wrote, read back with
the signals that moved, and the picture of reference vs batch."""

from __future__ import annotations

import os

from carsdepo_assets.app.monitoring import batch_decisions, drift_picture
from carsdepo_assets.monitoring.decision import EXPERIMENT, NO_ACTION
from carsdepo_assets_tests.app.conftest import DIM_BATCH, NORMAL_BATCH

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_each_batch_has_its_decision_and_the_signals_that_moved_newest_first(monitored):
    older = monitored.decision_path(NORMAL_BATCH)
    os.utime(older, (older.stat().st_atime, older.stat().st_mtime - 60))

    decisions, problems = batch_decisions(monitored)

    assert problems == []
    assert [(item.batch, item.action) for item in decisions] == [
        (DIM_BATCH, EXPERIMENT), (NORMAL_BATCH, NO_ACTION)]
    dim, normal = decisions
    assert dim.moved_signals == ("light",) and normal.moved_signals == ()
    assert "brightness_mean" in dim.drifted
    assert dim.moved[0] in dim.drifted and len(dim.moved) == 3
    assert dim.deviation > normal.deviation
    assert any("brightness_mean" in reason for reason in dim.reasons)
    assert normal.drifted == ()


def test_the_picture_compares_the_reference_with_the_batch(monitored):
    decisions, _ = batch_decisions(monitored)

    assert all(drift_picture(monitored, item).startswith(PNG_SIGNATURE) for item in decisions)

    monitored.reference_profile_path().unlink()
    assert drift_picture(monitored, decisions[0]) is None


def test_an_unreadable_decision_is_named_and_the_others_still_shown(monitored):
    broken = monitored.decision_path("lot-broken")
    broken.write_text('{"batch": "lot-broken", "act')

    decisions, problems = batch_decisions(monitored)

    assert {item.batch for item in decisions} == {NORMAL_BATCH, DIM_BATCH}
    assert len(problems) == 1 and str(broken) in problems[0]
    assert "JSONDecodeError" in problems[0]


def test_no_decisions_yet_is_no_error(carsdepo_home):
    assert batch_decisions(carsdepo_home) == ([], [])
