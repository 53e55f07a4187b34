"""``batch_predictions``: the champion's answer for every stored image of a batch.

Thin wiring: the work is ``carsdepo_assets.prediction.batch.predict_batch``; this asset picks
the model from the registry and turns the summary into run metadata.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
# MLflow and torch are imported by the asset when it runs: the code location loads without them.

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.prediction.batch import DEFAULT_CHUNK, BatchPredictions, predict_batch
from carsdepo_assets.prediction.inference_log import InferenceLog
from carsdepo_assets.resources.mlflow import ModelRegistry
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.taxonomy import NONE_ANSWER
from carsdepo_assets.visual import histogram_png, markdown_image

SCORE_BINS = [step / 20 for step in range(21)]


class BatchPredictionConfig(Config):
    model: str = Field(
        default="champion", description="champion, challenger or a registered version number."
    )
    threshold: float | None = Field(
        default=None, description="Operating score threshold; empty: the model's own."
    )
    chunk_size: int = Field(default=DEFAULT_CHUNK, description="Images predicted together.")


@asset(
    group_name="inference",
    partitions_def=batch_partitions,
    deps=[AssetKey("raw_images"), AssetKey("deployed_model")],
    kinds={"pytorch", "mlflow"},
    description=(
        'The champion\'s answer for every stored image of the batch: "None" or detections '
        "{label, score, box} in original pixels, in predictions/<batch>.jsonl; every answer is "
        "also recorded in the inference log."
    ),
)
def batch_predictions(
    context: AssetExecutionContext,
    config: BatchPredictionConfig,
    carsdepo_home: CarsdepoHome,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    from carsdepo_assets.prediction.models import ModelNotFound, resolve_model
    from carsdepo_assets.prediction.pyfunc import load_registered_detector

    batch = context.partition_key
    layout = carsdepo_home.layout
    model_registry.connect()
    try:
        model = resolve_model(model_registry.model_name, config.model)
    except (ModelNotFound, ValueError) as error:
        raise Failure(f"batch {batch}: {error}") from error
    context.log.info(f"batch {batch}: predicting with {model}")
    detector = load_registered_detector(model.uri)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            context.log.info(f"batch {batch}: {done}/{total} images predicted")

    try:
        result = predict_batch(
            layout, batch, detector, model, threshold=config.threshold,
            chunk_size=config.chunk_size, log=InferenceLog(layout.inference_log),
            progress=progress,
        )
    except (FileNotFoundError, ValueError) as error:
        raise Failure(f"batch {batch}: {error}") from error
    return MaterializeResult(metadata=prediction_metadata(result))


def prediction_metadata(result: BatchPredictions) -> dict:
    histogram = histogram_png(
        result.max_scores, bins=SCORE_BINS, xlabel="best candidate score per image",
        title=f"Scores (operating threshold {result.threshold:g})",
    )
    return {
        "model": str(result.model),
        "threshold": result.threshold,
        "images": result.images,
        "damaged": result.damaged,
        "none": result.none,
        "errors": result.errors,
        "share_damaged": _rounded(result.share_damaged, 4),
        **{f"detections_{name}": count for name, count in result.detections_per_class.items()},
        "mean_latency_ms": _rounded(result.mean_latency_ms, 1),
        "score_histogram": MetadataValue.md(markdown_image(histogram, "score histogram")),
        "answers": MetadataValue.md(answers_table(result.examples)),
        "path": MetadataValue.path(str(result.path)),
    }


def answers_table(rows: list[dict]) -> str:
    """A few answers, one line per image."""
    if not rows:
        return "The batch has no stored images."
    lines = ["| image | answer |", "|---|---|"]
    for row in rows:
        if "error" in row:
            answer = f"error: {row['error']}"
        elif row["damage"] == NONE_ANSWER:
            answer = f"None (best candidate {row['max_score']:.2f})"
        else:
            answer = ", ".join(f"{d['label']} {d['score']:.2f} {d['box']}" for d in row["damage"])
        lines.append(f"| `{row['sha256'][:12]}` | {answer.replace('|', '/')} |")
    return "\n".join(lines)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
