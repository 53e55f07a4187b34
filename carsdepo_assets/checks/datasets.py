"""Asset checks on ``curated_dataset``; the rules themselves live in ``datasets/validation.py``.

Boxes outside their image, split leakage and too few annotated images are ERRORs and blocking
(a detector must not train on such a dataset); a rare class is a WARN.
"""

from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, Config, MetadataValue, asset_check
from pydantic import Field

from carsdepo_assets.datasets import load_dataset, validation
from carsdepo_assets.datasets.validation import DEFAULT_CLASS_SHARE_FLOOR, DEFAULT_MIN_ANNOTATED

DATASET = "curated_dataset"


class MinAnnotatedImagesConfig(Config):
    train: int = Field(default=DEFAULT_MIN_ANNOTATED["train"], description="Minimum in train.")
    val: int = Field(default=DEFAULT_MIN_ANNOTATED["val"], description="Minimum in val.")
    test: int = Field(default=DEFAULT_MIN_ANNOTATED["test"], description="Minimum in test.")


class ClassShareConfig(Config):
    floor: float = Field(
        default=DEFAULT_CLASS_SHARE_FLOOR, description="Least share of box instances per class."
    )


def _result(outcome: validation.CheckOutcome, severity: AssetCheckSeverity) -> AssetCheckResult:
    metadata = {
        key: MetadataValue.json(value) if isinstance(value, dict | list) else value
        for key, value in outcome.details.items()
    }
    return AssetCheckResult(passed=outcome.passed, severity=severity, metadata=metadata)


def _cocos(curated_dataset: str) -> dict[str, dict]:
    return load_dataset(Path(curated_dataset)).cocos()


@asset_check(
    asset=DATASET, blocking=True,
    description="Every box has a positive size and lies inside its image.",
)
def boxes_inside_images(curated_dataset: str) -> AssetCheckResult:
    outcome = validation.boxes_inside_images(_cocos(curated_dataset))
    return _result(outcome, AssetCheckSeverity.ERROR)


@asset_check(
    asset=DATASET, blocking=True,
    description="No image and no group (copies of one photo) appears in two splits.",
)
def no_split_leakage(curated_dataset: str) -> AssetCheckResult:
    outcome = validation.no_split_leakage(_cocos(curated_dataset))
    return _result(outcome, AssetCheckSeverity.ERROR)


@asset_check(
    asset=DATASET, blocking=True,
    description="Each split has at least its minimum of images with boxes.",
)
def min_annotated_images(
    config: MinAnnotatedImagesConfig, curated_dataset: str
) -> AssetCheckResult:
    minimums = {"train": config.train, "val": config.val, "test": config.test}
    outcome = validation.min_annotated_images(_cocos(curated_dataset), minimums)
    return _result(outcome, AssetCheckSeverity.ERROR)


@asset_check(
    asset=DATASET,
    description="Each class has at least a floor share of the box instances.",
)
def class_share_floor(config: ClassShareConfig, curated_dataset: str) -> AssetCheckResult:
    outcome = validation.class_share_floor(_cocos(curated_dataset), config.floor)
    return _result(outcome, AssetCheckSeverity.WARN)


dataset_checks = [boxes_inside_images, no_split_leakage, min_annotated_images, class_share_floor]
