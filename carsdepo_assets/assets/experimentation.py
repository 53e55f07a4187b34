"""``experiment_sweep``: back to experimentation after a large drift.

A small grid of detector configurations (input size, brightness/contrast augmentation, learning
rate), each trained on the latest curated dataset as its own MLflow run in an experiment named
after the batch, scored on the val split. It reports the best; it never registers or promotes.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
# MLflow and torch are imported by the asset when it runs: the code location loads without them.

import itertools
from pathlib import Path

from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset
from pydantic import Field

from carsdepo_assets.assets.metadata import rounded
from carsdepo_assets.assets.training import DetectorTrainingConfig, train_tracked
from carsdepo_assets.datasets import load_dataset
from carsdepo_assets.executors import TRAINING_OP_TAGS
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.state import CarsdepoHome


class ExperimentSweepConfig(Config):
    min_sizes: list[int] = Field(default=[320, 448], description="Input short sides to try.")
    augmentations: list[float] = Field(
        default=[0.3, 0.6], description="Brightness/contrast augmentation strengths to try."
    )
    learning_rates: list[float] = Field(default=[1e-3], description="Learning rates to try.")
    iterations: int = Field(default=150, description="Training iterations per configuration.")
    time_budget_s: float = Field(
        default=0.0, description="Seconds of training per configuration, validation included, "
        "even before its iterations (0: none, the full iterations)."
    )
    max_runs: int = Field(default=4, description="Cap on the number of configurations.")

    def variants(self) -> list[dict]:
        grid = itertools.product(self.min_sizes, self.augmentations, self.learning_rates)
        return [
            {"min_size": size, "max_size": max(size, round(size * 4 / 3)), "brightness": aug,
             "contrast": aug, "lr": lr}
            for size, aug, lr in itertools.islice(grid, self.max_runs)
        ]


def experiment_name(batch: str) -> str:
    return f"carsdepo-experiment-{batch}"


@asset(
    group_name="experimentation",
    partitions_def=batch_partitions,
    ins={"curated_dataset": AssetIn()},
    op_tags=TRAINING_OP_TAGS,
    description="A sweep of detector configurations after a large drift in this batch, one "
    "MLflow run each in experiment carsdepo-experiment-<batch>; reports the best by val AP50 "
    "and never promotes.",
)
def experiment_sweep(
    context: AssetExecutionContext,
    config: ExperimentSweepConfig,
    carsdepo_home: CarsdepoHome,
    curated_dataset: str,
) -> Output[dict]:
    import mlflow

    from carsdepo_assets.detection.evaluate import evaluate_on_split

    layout = carsdepo_home.layout
    batch = context.partition_key
    dataset = load_dataset(Path(curated_dataset))
    carsdepo_home.connect_mlflow(experiment_name(batch))
    if abandoned := carsdepo_home.end_earlier_attempts(context.run.tags, experiment_name(batch)):
        context.log.info(f"ended {len(abandoned)} MLflow run(s) an earlier attempt left running")
    experiment_id = mlflow.get_experiment_by_name(experiment_name(batch)).experiment_id
    results = []
    for index, variant in enumerate(config.variants(), start=1):
        name = ", ".join(f"{key}={value}" for key, value in variant.items())
        context.log.info(f"configuration {index}/{len(config.variants())}: {name}")
        training = DetectorTrainingConfig(iterations=config.iterations,
                                          time_budget_s=config.time_budget_s, **variant)
        tags = {"carsdepo.drifted_batch": batch, "dagster_run_id": context.run_id}
        with mlflow.start_run(run_name=f"sweep {index}: {name}", tags=tags) as run:
            tracked = train_tracked(
                context, training, dataset, layout.run_folder(context.run_id, f"sweep-{index}")
            )
            result, _, ms_per_image = evaluate_on_split(
                tracked.trained, dataset.coco("val"), dataset.image_root
            )
            metrics = {f"val_{k}": v for k, v in result.flat_metrics().items()}
            mlflow.log_metrics({**metrics, "val_ms_per_image": ms_per_image})
        results.append({"run_id": run.info.run_id, **variant,
                        "val_AP50": metrics.get("val_AP50", 0.0),
                        "val_none_accuracy": metrics.get("val_none_accuracy", 0.0)})
    best = max(results, key=lambda row: row["val_AP50"])
    urls = {row["run_id"]: carsdepo_home.mlflow_run_url(experiment_id, row["run_id"])
            for row in results}
    lines = ["| run | min_size | augmentation | lr | val AP50 | val None accuracy |",
             "|---|---|---|---|---|---|"]
    lines += [
        f"| [{row['run_id'][:8]}]({urls[row['run_id']]}){' (best)' if row is best else ''} | "
        f"{row['min_size']} | {row['brightness']} | {row['lr']} | {row['val_AP50']:.3f} | "
        f"{row['val_none_accuracy']:.3f} |"
        for row in results
    ]
    context.log.info(f"best configuration: {best}")
    return Output(
        {"experiment": experiment_name(batch), "best": best, "runs": results},
        metadata={
            "experiment": experiment_name(batch),
            "best_val_AP50": rounded(best["val_AP50"]),
            "best_run": MetadataValue.url(urls[best["run_id"]]),
            "runs": MetadataValue.md("\n".join(lines)),
            "note": "Not registered or promoted: a person decides what to take from the sweep.",
        },
    )
