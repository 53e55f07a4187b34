"""The models page's view of the registry: versions with their test figures and aliases, and
what a rollback would change, read from a real MLflow store without changing it."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from carsdepo_assets.app.models import registered_versions, rollback_preview
from carsdepo_assets.detection.champion import (
    CHALLENGER,
    CHAMPION,
    current_champion,
    promote,
)

pytestmark = pytest.mark.slow  # the package's tiny champion is trained once (most of a minute)


def log_test_figures(model_name: str, version: str, figures: dict[str, float]) -> None:
    run_id = MlflowClient().get_model_version(model_name, version).run_id
    for name, value in figures.items():
        MlflowClient().log_metric(run_id, f"test_{name}", value)


def test_a_single_champion_has_nothing_to_roll_back_to(champion):
    versions = registered_versions(champion.name)

    assert [(item.version, item.aliases) for item in versions] == [("1", (CHAMPION, CHALLENGER))]
    preview = rollback_preview(versions)
    assert preview.current.version == "1" and preview.restored is None
    assert "did not replace an earlier champion" in preview.blocked
    assert preview.changes() == []


def test_the_preview_names_both_versions_and_each_figure_before_and_after(champion):
    """Version 2: the same saved model, registered from a run of its own with other figures."""
    client = MlflowClient()
    log_test_figures(champion.name, "1", {"AP50": 0.81, "none_accuracy": 0.9})
    with mlflow.start_run() as run:
        mlflow.log_metrics({"test_AP50": 0.86, "test_AP": 0.51})
    source = client.get_model_version(champion.name, "1").source
    created = client.create_model_version(champion.name, source, run_id=run.info.run_id)
    version = str(created.version)
    client.set_registered_model_alias(champion.name, CHALLENGER, version)
    promote(champion.name, version)

    versions = registered_versions(champion.name)
    preview = rollback_preview(versions)

    assert [item.version for item in versions] == [version, "1"]
    assert versions[0].aliases == (CHAMPION, CHALLENGER) and versions[1].aliases == ()
    assert versions[0].figures == {"AP50": 0.86, "AP": 0.51}
    assert versions[0].previous_champion == "1" and versions[0].promoted_at
    assert (preview.current.version, preview.restored.version, preview.blocked) == (
        version, "1", None)
    assert preview.changes() == [("AP50", 0.86, 0.81), ("AP", 0.51, None),
                                 ("none_accuracy", None, 0.9)]
    assert current_champion(champion.name) == version  # looking changed nothing


def test_no_champion_and_no_model_are_said_plainly(empty_registry):
    from carsdepo_assets.detection.champion import configure_mlflow

    configure_mlflow(empty_registry)
    assert registered_versions("carsdepo-damage-detector") == []
    assert rollback_preview([]).blocked == "there is no champion: nothing to roll back"
