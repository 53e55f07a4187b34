"""Asset checks on ``raw_images``, evaluated per batch partition."""

# No `from __future__ import annotations`: Dagster reads these annotations (config, resources)
# when the definitions are built.

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Config,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from carsdepo_assets.assets.ingestion import raw_images
from carsdepo_assets.images.ingest import (
    BatchSourceError,
    audit_manifest,
    find_undecodable_images,
    load_manifest,
    quarantined_share,
)
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.state import CarsdepoHome

MAX_LISTED = 20


class QuarantineShareConfig(Config):
    max_share: float = Field(
        default=0.2, description="Largest acceptable share of quarantined files (0-1)."
    )


@asset_check(asset=raw_images, partitions_def=batch_partitions)
def every_input_file_accounted_for(
    context: AssetCheckExecutionContext, carsdepo_home: CarsdepoHome
) -> AssetCheckResult:
    """The files now in the batch folder are exactly the manifest's rows: nothing dropped."""
    manifest = load_manifest(carsdepo_home.layout, context.partition_key)
    try:
        audit = audit_manifest(manifest)
    except BatchSourceError as error:
        return AssetCheckResult(passed=False, description=str(error))
    return AssetCheckResult(
        passed=audit.complete,
        metadata={
            "files_in_manifest": len(manifest.rows),
            "not_in_manifest": MetadataValue.json(audit.unlisted[:MAX_LISTED]),
            "no_longer_on_disk": MetadataValue.json(audit.vanished[:MAX_LISTED]),
        },
    )


@asset_check(asset=raw_images, partitions_def=batch_partitions)
def quarantined_share_under_limit(
    context: AssetCheckExecutionContext, config: QuarantineShareConfig, carsdepo_home: CarsdepoHome
) -> AssetCheckResult:
    """Many rejected files point at a broken upload or camera, even if the batch went through."""
    manifest = load_manifest(carsdepo_home.layout, context.partition_key)
    share = quarantined_share(manifest)
    return AssetCheckResult(
        passed=share <= config.max_share,
        severity=AssetCheckSeverity.WARN,
        description=f"{share:.0%} of examined files quarantined (limit {config.max_share:.0%})",
        metadata={"quarantined_share": share, "limit": config.max_share},
    )


@asset_check(asset=raw_images, partitions_def=batch_partitions)
def every_stored_image_decodes(
    context: AssetCheckExecutionContext, carsdepo_home: CarsdepoHome
) -> AssetCheckResult:
    """Downstream stages trust the store: each image of the batch is present, intact, decodable."""
    layout = carsdepo_home.layout
    manifest = load_manifest(layout, context.partition_key)
    problems = find_undecodable_images(layout, manifest)
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "images_checked": len(manifest.image_hashes()),
            "problems": MetadataValue.json(dict(list(problems.items())[:MAX_LISTED])),
        },
    )


raw_images_checks = [
    every_input_file_accounted_for,
    quarantined_share_under_limit,
    every_stored_image_decodes,
]
