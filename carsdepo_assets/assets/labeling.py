"""Labeling assets: the Label Studio project, a batch's tasks, and the annotation snapshot.

Thin wiring: Label Studio is reached only through ``LabelStudioResource``, conversions live in
``carsdepo_assets.labeling``. Annotators work in Label Studio between ``label_studio_tasks``
and ``annotations``; ``annotation_sensor`` notices their work.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from carsdepo_assets.fileio import atomic_write_json
from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.history import write_snapshot
from carsdepo_assets.labeling.prelabels import ImageToLabel, task_predictions
from carsdepo_assets.labeling.results import SOURCE_IMPORTED, Conversion, convert_tasks
from carsdepo_assets.labeling.review import (
    review_markdown,
    review_outcomes,
    review_rows,
    review_total,
)
from carsdepo_assets.labeling.tasks import batch_rows, batch_task_data
from carsdepo_assets.partitions import batch_partitions
from carsdepo_assets.resources.label_studio import LabelStudioResource
from carsdepo_assets.resources.prelabeler import Prelabeler
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.taxonomy import CLASS_NAMES

GROUP = "labeling"
# what the pre-annotations saved, per batch and model version (read by kpi_report)
PRELABEL_REVIEW_REPORT = ("prelabels", "review.json")


@asset(group_name=GROUP, kinds={"labelstudio"})
def label_studio_project(
    carsdepo_home: CarsdepoHome, label_studio: LabelStudioResource
) -> MaterializeResult:
    """The Label Studio project with carsdepo's labeling config, serving the image store."""
    info = label_studio.ensure_project(carsdepo_home.layout.images)
    return MaterializeResult(metadata={
        "project_id": info.id,
        "title": info.title,
        "created": info.created,
        "local_files_storage_id": info.storage_id,
        "project_url": MetadataValue.url(info.url),
    })


@asset(
    group_name=GROUP,
    kinds={"labelstudio"},
    partitions_def=batch_partitions,
    deps=[AssetKey("raw_images"), label_studio_project],
)
def label_studio_tasks(
    context: AssetExecutionContext,
    carsdepo_home: CarsdepoHome,
    label_studio: LabelStudioResource,
    prelabeler: Prelabeler,
) -> MaterializeResult:
    """One task per stored image of the batch (none twice), with the model's pre-annotations
    when the ``prelabeler`` has a model."""
    batch = context.partition_key
    layout = carsdepo_home.layout
    manifest = load_manifest(layout, batch)
    project = label_studio.ensure_project(layout.images)
    tasks = batch_task_data(manifest, layout.images, label_studio.document_root(layout.images))
    imported = label_studio.import_tasks(tasks, layout.images)
    context.log.info(
        f"batch {batch}: {len(imported.created)} tasks created, "
        f"{len(imported.existing)} already in Label Studio"
    )
    store = ImageStore(layout.images)
    images = [ImageToLabel(row.sha256, store.path_for(row.sha256), row.width, row.height)
              for row in batch_rows(manifest)]
    prelabels = prelabeler.predictions_for(images)
    added = 0
    if prelabels is not None:
        predictions = task_predictions(prelabels, images, imported.task_ids)
        added = label_studio.add_predictions(predictions, prelabels.model_version)
        context.log.info(f"{added} pre-annotations of model {prelabels.model_version} added")
    return MaterializeResult(metadata={
        "batch": batch,
        "images": len(images),
        "tasks_created": len(imported.created),
        "tasks_existing": len(imported.existing),
        "pre_annotations": prelabels.model_version if prelabels else "none (no model yet)",
        "pre_annotations_added": added,
        "project_url": MetadataValue.url(project.url),
    })


@asset(group_name=GROUP, kinds={"labelstudio"}, deps=[label_studio_tasks])
def annotations(
    context: AssetExecutionContext, carsdepo_home: CarsdepoHome, label_studio: LabelStudioResource
) -> MaterializeResult:
    """The completed annotations of the project as a versioned snapshot in pixels.

    The conversion rules (skips, several annotations on one task, malformed boxes) are in
    ``carsdepo_assets.labeling.results``; every item left out is counted here by reason.
    """
    tasks = label_studio.fetch_completed_annotations()
    conversion = convert_tasks(tasks)
    path = write_snapshot(conversion.snapshot, carsdepo_home.layout.annotations)
    context.log.info(f"annotation snapshot {conversion.snapshot.version} written to {path}")
    outcomes = review_outcomes(tasks)
    rows = review_rows(outcomes)
    atomic_write_json(carsdepo_home.layout.report_path(*PRELABEL_REVIEW_REPORT), rows)
    total = review_total(outcomes)
    return MaterializeResult(metadata={
        **snapshot_metadata(conversion, str(path)),
        **{f"prelabel_{key}": value for key, value in total.as_dict().items()},
        "prelabel_review": MetadataValue.md(review_markdown(rows)),
    })


def snapshot_metadata(conversion: Conversion, path: str) -> dict:
    snapshot = conversion.snapshot
    boxes = {name: 0 for name in CLASS_NAMES}
    for image in snapshot.images:
        for box in image.boxes:
            boxes[box.label] += 1
    rejected = conversion.rejected_by_reason
    return {
        "version": snapshot.version,
        "path": MetadataValue.path(path),
        "tasks_seen": conversion.tasks_seen,
        "images": MetadataValue.int(len(snapshot.images)),
        **{f"boxes_{name}": count for name, count in boxes.items()},
        "negatives": sum(image.no_damage for image in snapshot.images),
        "imported_images": sum(image.source == SOURCE_IMPORTED for image in snapshot.images),
        "clipped_boxes": snapshot.clipped_boxes,
        "rotated_boxes": conversion.rotated_boxes,
        "cancelled_annotations": conversion.cancelled_annotations,
        "rejected": sum(rejected.values()),
        "rejected_by_reason": MetadataValue.md(_rejected_table(conversion)),
    }


def _rejected_table(conversion: Conversion) -> str:
    if not conversion.snapshot.rejected:
        return "Nothing rejected."
    examples: dict[str, str] = {}
    for item in conversion.snapshot.rejected:
        examples.setdefault(item.reason, f"task {item.task_id}: {item.detail}")
    lines = ["| reason | count | example |", "|---|---:|---|"]
    lines += [f"| {reason} | {count} | {examples[reason].replace('|', '/')} |"
              for reason, count in conversion.rejected_by_reason.items()]
    return "\n".join(lines)
