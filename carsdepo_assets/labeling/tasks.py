"""Label Studio tasks from batch manifests, and the ports the labeling workflows talk through.

A task's data carries the image's sha256, so annotations join back to the image store without
guessing from file names. Its ``image`` is a URL that Label Studio itself serves from the store
(local-files serving), relative to the server's document root:
``/data/local-files/?d=images/<sha[:2]>/<sha>.<ext>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import quote

from carsdepo_assets.images.manifest import DUPLICATE, STORED, BatchManifest, ManifestRow
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.config import IMAGE_NAME

LOCAL_FILES_URL = "/data/local-files/?d="
OPTIONAL_KEYS = ("group", "split", "source")  # extra task data import-coco sets


def image_url(image_path: Path, document_root: Path) -> str:
    """The URL Label Studio serves ``image_path`` at, given its local-files document root."""
    image_path, document_root = Path(image_path).resolve(), Path(document_root).resolve()
    if document_root not in image_path.parents:
        raise ValueError(
            f"image {image_path} is outside Label Studio's local-files document root "
            f"{document_root}: start the server with the state directory as its root, or set "
            "the resource's local_files_root to a folder that contains the image store"
        )
    return LOCAL_FILES_URL + quote(image_path.relative_to(document_root).as_posix(), safe="/")


def task_data(
    row: ManifestRow, batch: str, image_path: Path, document_root: Path,
    extra: Mapping[str, str | None] | None = None,
) -> dict:
    """The data of one task: image URL, sha256, batch, size, and optional group/split/source."""
    data = {
        IMAGE_NAME: image_url(image_path, document_root),
        "sha256": row.sha256,
        "batch": batch,
        "width": row.width,
        "height": row.height,
    }
    for key, value in (extra or {}).items():
        if key not in OPTIONAL_KEYS:
            raise ValueError(f"task data key {key!r} is not one of {OPTIONAL_KEYS}")
        if value is not None:
            data[key] = value
    return data


def batch_rows(manifest: BatchManifest) -> list[ManifestRow]:
    """The first stored/duplicate row of each distinct image of the batch, in manifest order."""
    rows: dict[str, ManifestRow] = {}
    for row in manifest.rows:
        if row.sha256 and row.status in (STORED, DUPLICATE):
            rows.setdefault(row.sha256, row)
    return list(rows.values())


def batch_task_data(
    manifest: BatchManifest,
    images_dir: Path,
    document_root: Path,
    extra_by_sha: Mapping[str, Mapping[str, str | None]] | None = None,
) -> list[dict]:
    """One task per distinct stored image of the batch (FileNotFoundError when one is missing)."""
    store = ImageStore(images_dir)
    extra_by_sha = extra_by_sha or {}
    return [
        task_data(row, manifest.batch, store.path_for(row.sha256), document_root,
                  extra_by_sha.get(row.sha256))
        for row in batch_rows(manifest)
    ]


def match_manifest_rows(
    manifest: BatchManifest, file_names: Iterable[str]
) -> dict[str, ManifestRow]:
    """Find each file name (as a COCO file names it) among the manifest's rows.

    A name matches the row with the same relative path, else the only row whose path ends with
    ``/<name>`` (the batch was ingested from a parent folder, e.g. ``images/<name>``). Names
    with no match are left out; callers count them.
    """
    by_path = {row.path: row for row in manifest.rows}
    by_suffix: dict[str, list[ManifestRow]] = {}
    for row in manifest.rows:
        parts = row.path.split("/")
        for start in range(1, len(parts)):
            by_suffix.setdefault("/".join(parts[start:]), []).append(row)
    matched = {}
    for name in file_names:
        clean = PurePosixPath(name.replace("\\", "/")).as_posix()
        if clean in by_path:
            matched[name] = by_path[clean]
        elif len(by_suffix.get(clean, [])) == 1:
            matched[name] = by_suffix[clean][0]
    return matched


@dataclass(frozen=True)
class TaskRef:
    """A task as the labeling workflows need it: id, data, annotations and predictions (dicts)."""

    id: int
    data: dict
    annotations: list[dict] = field(default_factory=list)
    predictions: tuple[dict, ...] = ()  # Label Studio's predictions: model_version, result

    @property
    def prediction_versions(self) -> tuple[str, ...]:
        return tuple(prediction.get("model_version") or "" for prediction in self.predictions)

    @property
    def sha256(self) -> str | None:
        return self.data.get("sha256")


@dataclass
class TaskImport:
    """What ``import_tasks`` did: task id per sha256, split into new and already present."""

    created: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)

    @property
    def task_ids(self) -> dict[str, int]:
        return {**self.existing, **self.created}


class LabelingBackend(Protocol):
    """What the labeling workflows need from Label Studio (``LabelStudioResource`` has it)."""

    def document_root(self, images_dir: Path) -> Path: ...

    def list_tasks(self) -> list[TaskRef]: ...

    def import_tasks(self, tasks: Sequence[dict], images_dir: Path) -> TaskImport: ...

    def update_task_data(self, task_id: int, data: dict) -> None: ...

    def submit_annotation(
        self, task_id: int, result: list[dict], *, imported: bool = False,
        skipped: bool = False, lead_time: float | None = None,
    ) -> int: ...
