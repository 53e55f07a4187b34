"""Checks on the annotation snapshot, before ``curated_dataset`` builds on it."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from carsdepo_assets.assets.labeling import annotations
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.history import load_latest_snapshot
from carsdepo_assets.resources.state import CarsdepoHome

MAX_REJECTED_SHARE = 0.10  # of labelled images plus rejected items


@asset_check(asset=annotations, blocking=True)
def annotated_images_are_stored(carsdepo_home: CarsdepoHome) -> AssetCheckResult:
    """Every labelled image is in the image store, so the dataset can join it (ERROR)."""
    layout = carsdepo_home.layout
    snapshot = load_latest_snapshot(layout.annotations)
    if snapshot is None:
        return AssetCheckResult(passed=False, description="no annotation snapshot written yet")
    store = ImageStore(layout.images)
    missing = [image.sha256 for image in snapshot.images if not store.contains(image.sha256)]
    return AssetCheckResult(
        passed=not missing,
        metadata={"images": len(snapshot.images), "missing": len(missing),
                  "missing_examples": ", ".join(sha[:12] for sha in missing[:5])},
    )


@asset_check(asset=annotations)
def few_annotations_rejected(carsdepo_home: CarsdepoHome) -> AssetCheckResult:
    """Rejected items stay a small share of the work (WARN): many mean a broken setup."""
    snapshot = load_latest_snapshot(carsdepo_home.layout.annotations)
    if snapshot is None:
        return AssetCheckResult(passed=False, description="no annotation snapshot written yet")
    total = len(snapshot.images) + len(snapshot.rejected)
    share = len(snapshot.rejected) / total if total else 0.0
    return AssetCheckResult(
        passed=share <= MAX_REJECTED_SHARE,
        severity=AssetCheckSeverity.WARN,
        metadata={"rejected": len(snapshot.rejected), "share": round(share, 4),
                  "limit": MAX_REJECTED_SHARE},
    )
