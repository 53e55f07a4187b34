"""Asset metadata for people: figures rounded, MLflow UI pages as links."""

from __future__ import annotations

import pytest

from carsdepo_assets.assets.metadata import rounded
from carsdepo_assets.resources.state import CarsdepoHome


@pytest.mark.parametrize(("value", "shown"), [
    (0.9208567772837303, 0.921), (0.012345, 0.0123), (1234.56, 1235.0), (0.0, 0.0),
    (None, None),
])
def test_figures_keep_three_significant_digits_and_their_whole_part(value, shown):
    assert rounded(value) == shown


def test_links_open_the_configured_mlflow_ui_on_the_run_and_the_version_in_its_training_view():
    home = CarsdepoHome(mlflow_ui_url="http://mlflow.internal:5000/")

    assert (home.mlflow_run_url("3", "abc123")
            == "http://mlflow.internal:5000/#/experiments/3/runs/abc123"
            "?workflowType=machine_learning")
    assert (home.mlflow_version_url("damage detector", "7")
            == "http://mlflow.internal:5000/#/models/damage%20detector/versions/7"
            "?workflowType=machine_learning")
