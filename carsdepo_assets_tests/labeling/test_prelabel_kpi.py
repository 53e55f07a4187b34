"""The pre-annotation KPI: what ``annotations`` recorded per batch reaches ``kpi_report``."""

from dagster import materialize

from carsdepo_assets.assets.kpis import kpi_report, prelabel_review
from carsdepo_assets.assets.labeling import PRELABEL_REVIEW_REPORT
from carsdepo_assets.fileio import atomic_write_json
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout

ROWS = [
    {"batch": "incoming-dim", "model_version": "detector v1", "images": 60, "accepted": 90,
     "adjusted": 10, "deleted": 40, "drawn": 0, "accepted_share": 0.9},
    {"batch": "incoming-night", "model_version": "detector v2", "images": 20, "accepted": 10,
     "adjusted": 5, "deleted": 2, "drawn": 5, "accepted_share": 0.5},
]


def test_the_accepted_share_is_taken_over_every_reviewed_batch(carsdepo_home: StateLayout):
    path = carsdepo_home.report_path(*PRELABEL_REVIEW_REPORT)
    assert prelabel_review(path).headline == {}  # nothing reviewed yet: no figure, not a zero

    atomic_write_json(path, ROWS)
    review = prelabel_review(path)

    assert review.headline == {"prelabel_accepted_share": round(100 / 120, 3)}
    assert "| incoming-night | detector v2 | 20 | 10 | 5 | 2 | 5 | 50% |" in review.markdown


def test_kpi_report_shows_what_pre_annotations_saved_per_batch(carsdepo_home: StateLayout):
    atomic_write_json(carsdepo_home.report_path(*PRELABEL_REVIEW_REPORT), ROWS)

    result = materialize([kpi_report], resources={
        "carsdepo_home": CarsdepoHome(path=str(carsdepo_home.root)),
        "model_registry": ModelRegistry()})

    metadata = result.asset_materializations_for_node("kpi_report")[0].metadata
    assert metadata["prelabel_accepted_share"].value == 0.833
    assert "| incoming-dim | detector v1 | 60 | 90 | 10 | 40 | 0 | 90% |" \
        in metadata["dashboard"].value
