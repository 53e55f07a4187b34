"""``evaluation_report`` (challenger vs champion on the test split) and ``deployed_model``."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
# MLflow and torch are imported by the functions that use them: the code location loads
# without them.

from pathlib import Path
from typing import TYPE_CHECKING

from dagster import AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, Output, asset
from pydantic import Field

from carsdepo_assets.assets.metadata import mlflow_links, rounded
from carsdepo_assets.datasets import load_dataset
from carsdepo_assets.detection.anchors import coverage_for
from carsdepo_assets.detection.bootstrap import LOWER_BOUND, bootstrap_bounds
from carsdepo_assets.detection.metrics import EvaluationResult
from carsdepo_assets.detection.report import (
    comparison_markdown,
    confusion_matrix_png,
    pr_curves_png,
    result_markdown,
    worst_examples_png,
)
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CLASS_NAMES
from carsdepo_assets.visual import markdown_image

if TYPE_CHECKING:
    from carsdepo_assets.detection.champion import GateDecision


class EvaluationConfig(Config):
    batch_size: int = Field(default=4, description="Images predicted together.")
    confidence: float = Field(
        default=0.95, description="One-sided confidence of the bootstrap lower bounds."
    )
    resamples: int = Field(default=1000, description="Bootstrap resamples of the test images.")


@asset(
    group_name="training",
    ins={"detector": AssetIn(), "curated_dataset": AssetIn()},
    required_resource_keys={"model_registry"},
    description=(
        "The challenger, and the champion when there is one, evaluated on the test split: COCO "
        "AP/AP50/AP75/APs/APm/APl from every detection (score >= 0.001, up to 100 per image), "
        'per-class AP and AP50 by size, class-agnostic "damage" AP50, what became of each '
        "ground-truth box, precision/recall/F1 at the operating threshold, "
        'damaged-vs-"None" accuracy, bootstrap lower bounds of AP50 and that accuracy over the '
        "test images, scratch/dent confusion and ms per image. The challenger's figures go to "
        "the MLflow run that trained it and onto its registered version, with the quality "
        "gate's verdict."
    ),
)
def evaluation_report(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    detector: dict,
    curated_dataset: str,
) -> Output[dict]:
    from carsdepo_assets.detection.champion import current_champion, describe_version
    from carsdepo_assets.detection.data import coco_boxes_as_seen
    from carsdepo_assets.detection.evaluate import evaluate_on_split
    from carsdepo_assets.prediction.pyfunc import load_registered_detector

    registry = context.resources.model_registry
    registry.connect()
    name = registry.model_name
    models = {"challenger": detector["version"]}
    champion = current_champion(name)
    if champion is not None and champion != detector["version"]:
        models["champion"] = champion
    dataset = load_dataset(Path(curated_dataset))
    test = dataset.coco("test")
    if not test["images"]:
        raise Failure(f"dataset {dataset.version} has no test images: nothing to evaluate on")
    results: dict[str, EvaluationResult] = {}
    predictions: dict[str, dict[int, list[Detection]]] = {}
    report: dict = {"dataset_version": dataset.version, "models": {}}
    for role, version in models.items():
        context.log.info(f"evaluating {role} {name} v{version} on {len(test['images'])} images")
        model = load_registered_detector(f"models:/{name}/{version}")
        result, predictions[role], ms_per_image = evaluate_on_split(
            model, test, dataset.image_root, config.batch_size
        )
        results[role] = result
        bounds = bootstrap_bounds(test, predictions[role], model.config.score_threshold,
                                  config.confidence, config.resamples)
        report["models"][role] = {
            "version": version,
            "anchor_coverage": coverage_for(model.config, coco_boxes_as_seen(test, model.config)),
            "metrics": {**result.flat_metrics(), "ms_per_image": ms_per_image,
                        **{f"{name}{LOWER_BOUND}": bound.lower for name, bound in bounds.items()}},
            "details": result.to_dict(),
        }
    challenger = results["challenger"]
    metrics = report["models"]["challenger"]["metrics"]
    plots = {
        "pr_curves": pr_curves_png(challenger),
        "confusion_matrix": confusion_matrix_png(challenger),
    }
    worst = worst_examples_png(challenger, test, predictions["challenger"], dataset.image_root)
    if worst:
        plots["worst_examples"] = worst
    log_on_training_run(detector, report, plots)
    bounds_note = (f"one-sided {config.confidence:.0%} lower bounds: percentile bootstrap "
                   f"over the {len(test['images'])} test images, {config.resamples} resamples")
    decision = registry.judge(report["models"])
    describe_version(name, detector["version"],
                     version_description(detector, metrics, bounds_note, decision),
                     version_tags(metrics, decision))
    figures = ["AP50", "AP", "damage_AP50", "APs", *(f"AP50_{label}" for label in CLASS_NAMES),
               "none_accuracy", f"AP50{LOWER_BOUND}", f"none_accuracy{LOWER_BOUND}"]
    metadata = {
        "challenger_version": detector["version"],
        "champion_version": models.get("champion", "none"),
        **{figure: rounded(metrics.get(figure)) for figure in figures},
        "bounds": bounds_note,
        "test_images": len(test["images"]),
        "anchor_coverage": MetadataValue.json(report["models"]["challenger"]["anchor_coverage"]),
        "ms_per_image": round(metrics["ms_per_image"], 1),
        **mlflow_links(registry.carsdepo_home, name, detector["version"], detector["run_id"]),
        "report": MetadataValue.md(result_markdown(challenger)),
        "comparison": MetadataValue.md(comparison_markdown(results)),
        **{name: MetadataValue.md(markdown_image(png, name)) for name, png in plots.items()},
    }
    return Output(report, metadata=metadata)


def log_on_training_run(detector: dict, report: dict, plots: dict[str, bytes]) -> None:
    """The challenger's test figures on the MLflow run that trained it (in a re-executed
    Dagster run too), the metrics linked to its logged model: MLflow 3 shows them on that
    model's page, which the registered version links to as its source."""
    import mlflow
    from mlflow.tracking import MlflowClient

    run_id = detector["run_id"]
    mlflow.log_metrics(
        {f"test_{key}": value for key, value in report["models"]["challenger"]["metrics"].items()},
        run_id=run_id, model_id=detector.get("model_id"),
    )
    client = MlflowClient()
    client.log_dict(run_id, report, "evaluation_report.json")
    for plot_name, png in plots.items():
        client.log_image(run_id, _image(png), f"evaluation/{plot_name}.png")


def version_description(detector: dict, metrics: dict, bounds: str,
                        decision: "GateDecision") -> str:
    """The registered version's description: what it was trained on, how it tested, and
    whether the quality gate let it through, with the gate's reasons."""
    reasons = "\n".join(f"- {reason}" for reason in decision.reasons)
    return (
        f"{detector['backend']} detector trained on dataset {detector['dataset_version']}.\n\n"
        f"Test split: AP50 {rounded(metrics.get('AP50'))} (lower bound "
        f"{rounded(metrics.get(f'AP50{LOWER_BOUND}'))}), \"None\" accuracy "
        f"{rounded(metrics.get('none_accuracy'))} (lower bound "
        f"{rounded(metrics.get(f'none_accuracy{LOWER_BOUND}'))}); {bounds}.\n\n"
        f"Quality gate: {decision.outcome}.\n{reasons}"
    )


def version_tags(metrics: dict, decision: "GateDecision") -> dict[str, str]:
    """What the registered model's list of versions shows beside each (with the dataset
    version, tagged at registration)."""
    from carsdepo_assets.detection.champion import GATE_TAG

    return {
        "carsdepo.test_AP50": str(rounded(metrics.get("AP50"))),
        f"carsdepo.test_AP50{LOWER_BOUND}": str(rounded(metrics.get(f"AP50{LOWER_BOUND}"))),
        GATE_TAG: decision.outcome,
    }


def _image(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png))


@asset(
    group_name="training",
    ins={"evaluation_report": AssetIn()},
    required_resource_keys={"model_registry"},
    description=(
        "The champion: the challenger gets alias 'champion' once the blocking quality gate on "
        "evaluation_report passed; the champion it replaces is recorded for `carsdepo rollback`."
    ),
)
def deployed_model(context: AssetExecutionContext, evaluation_report: dict) -> Output[dict]:
    from carsdepo_assets.detection.champion import promote

    registry = context.resources.model_registry
    registry.connect()
    version = evaluation_report["models"]["challenger"]["version"]
    promotion = promote(registry.model_name, version)
    previous = promotion.previous_champion
    context.log.info(
        f"{registry.model_name} v{version} is the champion"
        + (f" (replacing v{previous})" if previous else "")
    )
    record = {
        "model_name": registry.model_name,
        "version": version,
        "previous_champion": previous,
        "metrics": evaluation_report["models"]["challenger"]["metrics"],
    }
    return Output(record, metadata={
        "champion": f"{registry.model_name} v{version}",
        "previous_champion": previous or "none",
        "AP50": rounded(record["metrics"].get("AP50")),
        "none_accuracy": rounded(record["metrics"].get("none_accuracy")),
        **mlflow_links(registry.carsdepo_home, registry.model_name, version),
    })
