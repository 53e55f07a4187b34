"""``kpi_report``: the business KPIs as a markdown dashboard with plots.

Thin wiring over ``carsdepo_assets.prediction.kpis`` (definitions are in its docstring). The
headline numbers are numeric metadata, so the Dagster UI plots each one across materializations.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.

import json
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from carsdepo_assets.assets.labeling import PRELABEL_REVIEW_REPORT
from carsdepo_assets.labeling.review import review_markdown
from carsdepo_assets.prediction.kpis.collect import DEFAULT_LATENCY_DAYS, collect_kpis
from carsdepo_assets.prediction.kpis.render import kpi_markdown, kpi_plots, save_report
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.visual import markdown_image

REPORT_FOLDER = "kpis"  # StateLayout.report_path(REPORT_FOLDER)


class KpiConfig(Config):
    latency_days: int = Field(
        default=DEFAULT_LATENCY_DAYS, description="Days of inference log behind the latencies."
    )


@asset(
    group_name="kpis",
    deps=[AssetKey(key) for key in (
        "batch_predictions", "annotations", "deployed_model", "retraining_decision")],
    description=(
        "Business KPIs from the platform's own records: automation rate, labelled share, "
        "damage-type distribution, annotation throughput, champion AP over time, inference "
        "latency p50/p95, drift alerts, what the pre-annotations saved the annotators per batch."
    ),
)
def kpi_report(
    context: AssetExecutionContext,
    config: KpiConfig,
    carsdepo_home: CarsdepoHome,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    layout = carsdepo_home.layout
    model_registry.connect()
    report = collect_kpis(layout, model_registry.model_name, latency_days=config.latency_days)
    plots = kpi_plots(report)
    dashboard = save_report(report, plots, layout.report_path(REPORT_FOLDER))
    for note in report.notes:
        context.log.info(f"KPIs: {note}")
    pictures = "\n\n".join(markdown_image(png, name) for name, png in plots.items())
    review = prelabel_review(layout.report_path(*PRELABEL_REVIEW_REPORT))
    return MaterializeResult(metadata={
        **report.headline(),
        **review.headline,
        "dashboard": MetadataValue.md(f"{kpi_markdown(report)}\n\n{review.markdown}\n\n"
                                      f"{pictures}"),
        "report": MetadataValue.json(report.to_dict()),
        "path": MetadataValue.path(str(dashboard)),
    })


@dataclass(frozen=True)
class PrelabelReview:
    headline: dict
    markdown: str


def prelabel_review(path: Path) -> PrelabelReview:
    """What the pre-annotations saved the annotators, per batch (written by ``annotations``):
    the share of final boxes accepted from the model unchanged, over all reviewed batches."""
    rows = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    final = sum(row["accepted"] + row["adjusted"] + row["drawn"] for row in rows)
    accepted = sum(row["accepted"] for row in rows)
    headline = {"prelabel_accepted_share": round(accepted / final, 3)} if final else {}
    return PrelabelReview(headline, "### Pre-annotations reviewed\n\n" + review_markdown(rows))
