"""``raw_images``: one batch of photos validated into the image store, with its manifest."""

# No `from __future__ import annotations`: Dagster reads these annotations (config, resources)
# when the definitions are built.

import base64
import io
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from carsdepo_assets.fileio import atomic_write_bytes
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.images.landing import landing_batch_folder
from carsdepo_assets.images.manifest import STATUSES, BatchManifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.images.summary import contact_sheet, rejected_markdown
from carsdepo_assets.images.validate import ImagePolicy
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout

_DEFAULTS = ImagePolicy()


class RawImagesConfig(Config):
    source_dir: str | None = Field(
        default=None, description="Folder to ingest. Default: landing/<partition key>."
    )
    min_side: int = Field(default=_DEFAULTS.min_side, description="Shortest side allowed, px.")
    max_side: int = Field(default=_DEFAULTS.max_side, description="Longest side allowed, px.")
    max_pixels: int = Field(
        default=_DEFAULTS.max_pixels, description="Decompression-bomb guard on declared pixels."
    )
    max_file_bytes: int = Field(default=_DEFAULTS.max_file_bytes, description="Largest file.")
    formats: list[str] = Field(
        default=list(_DEFAULTS.formats), description="Accepted formats (JPEG, PNG, WEBP)."
    )
    log_every: int = Field(default=100, description="Log progress every this many files.")

    def policy(self) -> ImagePolicy:
        return ImagePolicy(
            min_side=self.min_side,
            max_side=self.max_side,
            max_pixels=self.max_pixels,
            max_file_bytes=self.max_file_bytes,
            formats=tuple(self.formats),
        )


@asset(
    partitions_def=batch_partitions,
    group_name="ingestion",
    kinds={"python", "pillow"},
    description=(
        "Photos of one batch validated (format, size, decompression bomb, truncation), made "
        "upright RGB and stored by sha256; every input file gets a row in manifests/<batch>.json."
    ),
)
def raw_images(
    context: AssetExecutionContext, config: RawImagesConfig, carsdepo_home: CarsdepoHome
) -> MaterializeResult:
    layout = carsdepo_home.layout
    batch = context.partition_key
    source = (Path(config.source_dir) if config.source_dir
              else landing_batch_folder(layout, batch))
    context.log.info(f"ingesting batch {batch} from {source}")

    def progress(done: int, total: int) -> None:
        if done % config.log_every == 0 or done == total:
            context.log.info(f"{done}/{total} files examined")

    manifest = ingest_batch(source, batch, layout, config.policy(), progress)
    for note in manifest.notes:  # files gone from the folder, a damaged image or manifest mended
        context.log.warning(note)
    return MaterializeResult(metadata=_metadata(manifest, layout))


def _metadata(manifest: BatchManifest, layout: StateLayout) -> dict:
    counts = manifest.counts
    metadata: dict = {status: MetadataValue.int(counts[status]) for status in STATUSES}
    metadata["files"] = MetadataValue.int(len(manifest.rows))
    metadata["gone_from_folder"] = MetadataValue.int(len(manifest.gone))
    if manifest.notes:
        metadata["notes"] = MetadataValue.md("\n".join(f"- {note}" for note in manifest.notes))
    metadata["source"] = MetadataValue.path(manifest.source)
    metadata["manifest"] = MetadataValue.path(str(layout.manifest_path(manifest.batch)))
    metadata["rejected"] = MetadataValue.md(rejected_markdown(manifest))
    sheet = contact_sheet(ImageStore(layout.images), manifest)
    if sheet is not None:
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=80)
        path = layout.contact_sheet_path(manifest.batch)
        atomic_write_bytes(path, buffer.getvalue())
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        metadata["preview"] = MetadataValue.md(
            f"![stored images](data:image/jpeg;base64,{encoded})"
        )
        metadata["contact_sheet"] = MetadataValue.path(str(path))
    return metadata
