"""Ingest one batch folder into the image store and write its manifest.

The folder is walked recursively; files are handled one at a time in sorted path order, so
memory holds one image at a time (besides the batch's paths and manifest rows), however large
the batch. Every file gets exactly one manifest row:

- ``stored``: a valid photo this batch was the first to store (still ``stored`` on re-runs);
- ``duplicate``: the same stored bytes as an earlier file of the batch ("same image as a.jpg")
  or as an image another batch stored first ("already stored by batch b1");
- ``quarantined``: copied to ``quarantine/<batch>/files/<key>``, with its path and reason in
  ``quarantine/<batch>/reasons/<key>.txt``, where ``key`` is the sha256 of the file's relative
  path (``quarantine_key``): bounded and collision-free whatever the input names (a 255-byte
  name, ``a`` beside ``a.reason.txt/b``). Links (to files or folders), named pipes, devices and
  sockets are quarantined with a reason of their own and never opened or copied (see
  ``images.files``); so is a file over the size limit, which is read no further than the limit;
  and so is a file whose decoding fails in any way: no single file fails the batch;
- ``ignored``: hidden or operating-system files (``.DS_Store``, ``Thumbs.db``, ``._*``, anything
  whose name or folder starts with a dot, macOS ``__MACOSX`` folders) and empty sub-folders.

Every entry of the folder is accounted for: files, links, special files, and sub-folders through
what they hold (an empty one gets its own row).

Every write (image, owner record, quarantine copy, manifest) goes to a temporary name first
and is renamed into place, so a crash leaves no half-written file; re-running the batch then
completes it with the same manifest, storing nothing twice. One ingestion of a batch runs at a
time (``StateLayout.batch_lock``, across processes), and a batch is one folder: another folder
under an existing batch's name is refused before anything is stored.

Re-ingesting a batch keeps its history (``BatchManifest.gone``: images stored earlier whose
file left the folder stay referenced) and repairs a stored image of the batch that was damaged
on disk (``ImageStore.put``). A damaged manifest is rebuilt (a copy kept as
``<name>.corrupt-<time>``), its images recovered from the store's owner records; the manifest's
``notes`` say so.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from carsdepo_assets.fileio import (
    DamagedFile,
    atomic_write_bytes,
    atomic_write_text,
    keep_damaged_copy,
)
from carsdepo_assets.images.files import FileTooBig, NotARegularFile, read_regular_file
from carsdepo_assets.images.manifest import (
    DUPLICATE,
    GONE,
    IGNORED,
    QUARANTINED,
    STORED,
    BatchManifest,
    ManifestRow,
)
from carsdepo_assets.images.store import ImageStore, content_problem, sha256_hex
from carsdepo_assets.images.validate import (
    ImagePolicy,
    RejectedImage,
    decode_image,
    file_too_big_reason,
)
from carsdepo_assets.state import StateLayout, validate_batch_name

Progress = Callable[[int, int], None]
DEFAULT_POLICY = ImagePolicy()  # frozen, so one shared default is safe
REASON_SUFFIX = ".txt"
QUARANTINED_FILES = "files"
QUARANTINE_REASONS = "reasons"
EMPTY_FOLDER = "empty folder"
UNKNOWN_PATH = "(path unknown: the earlier manifest was damaged)"
_SYSTEM_FILES = {".ds_store": "macOS folder metadata", "thumbs.db": "Windows thumbnail cache",
                 "desktop.ini": "Windows folder settings"}
_SYSTEM_FOLDERS = {"__macosx": "macOS archive metadata folder"}


class BatchSourceError(Exception):
    """The batch as a whole cannot be processed (its folder is missing or unreadable)."""


def list_source_files(source_dir: Path) -> list[str]:
    """Every entry under ``source_dir`` (hidden ones included), as sorted relative POSIX paths:
    files of every kind, links (to folders too, not followed) and empty sub-folders (with a
    trailing ``/``)."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        problem = "is not a folder" if source_dir.exists() else "does not exist"
        raise BatchSourceError(f"batch source {source_dir} {problem}")

    def fail(error: OSError) -> None:
        raise BatchSourceError(f"cannot read batch source {source_dir}: {error}") from error

    found = []
    # Links to folders come in ``dirs`` and are not descended into: each is one entry.
    for folder, dirs, files in os.walk(source_dir, onerror=fail):
        relative = Path(folder).relative_to(source_dir)
        linked = [name for name in dirs if os.path.islink(os.path.join(folder, name))]
        found.extend((relative / name).as_posix() for name in files + linked)
        if not dirs and not files and relative != Path("."):
            found.append(relative.as_posix() + "/")
    return sorted(found)


def ignore_reason(relative_path: str) -> str | None:
    """Why a file is skipped as system clutter, or None for a file that should be examined."""
    if relative_path.endswith("/"):
        return EMPTY_FOLDER
    *folders, name = relative_path.split("/")
    for folder in folders:
        if folder.startswith("."):
            return f"inside hidden folder {folder}"
        if folder.lower() in _SYSTEM_FOLDERS:
            return f"inside {_SYSTEM_FOLDERS[folder.lower()]} {folder}"
    if name.lower() in _SYSTEM_FILES:
        return f"system file: {_SYSTEM_FILES[name.lower()]}"
    if name.startswith("._"):
        return "system file: macOS AppleDouble resource fork"
    if name.startswith("."):
        return "hidden file"
    return None


def ingest_batch(
    source_dir: Path,
    batch: str,
    layout: StateLayout,
    policy: ImagePolicy = DEFAULT_POLICY,
    progress: Progress | None = None,
) -> BatchManifest:
    """Validate, store and account for every file of ``source_dir`` as batch ``batch``."""
    validate_batch_name(batch)
    source_dir = Path(source_dir).resolve()
    paths = list_source_files(source_dir)
    with layout.batch_lock(batch):  # a second ingestion of the batch waits for this one
        manifest = BatchManifest(batch=batch, source=str(source_dir))
        earlier = _earlier_manifest(layout, manifest)
        ingestor = _BatchIngestor(source_dir, batch, layout, policy, manifest.notes)
        for done, relative in enumerate(paths, start=1):
            manifest.rows.append(ingestor.ingest(relative))
            if progress is not None:
                progress(done, len(paths))
        _keep_history(manifest, earlier)
        manifest.save(layout.manifest_path(batch))
    return manifest


def _earlier_manifest(layout: StateLayout, manifest: BatchManifest) -> BatchManifest | None:
    """The batch's manifest before this ingestion (None for a new batch).

    A batch is one folder: another folder under its name is refused, as it would replace the
    manifest of the first one. A damaged manifest (a copy kept aside) stands in as the images
    the store records this batch as owner of, so none of them is left unreferenced."""
    path = layout.manifest_path(manifest.batch)
    if not path.is_file():
        return None
    try:
        earlier = BatchManifest.load(path)
    except DamagedFile as damaged:
        copy = keep_damaged_copy(path)
        manifest.notes.append(
            f"the earlier manifest was damaged ({damaged.problem}); rebuilt, a copy kept as {copy}")
        store = ImageStore(layout.images)
        return BatchManifest(manifest.batch, manifest.source, gone=[
            ManifestRow(UNKNOWN_PATH, GONE, sha256=sha, reason="stored by this batch earlier")
            for sha in store.owned_by(manifest.batch)
        ])
    if earlier.source != manifest.source:
        raise BatchSourceError(
            f"batch {manifest.batch!r} already holds the photos of {earlier.source}; ingest "
            f"{manifest.source} as another batch (re-running a batch from its own folder is fine)"
        )
    return earlier


def _keep_history(manifest: BatchManifest, earlier: BatchManifest | None) -> None:
    """Add a ``gone`` row for each image ``earlier`` referenced that ``manifest`` no longer
    does, so that no image of the batch is left referenced by no manifest."""
    if earlier is None:
        return
    current = {row.path: row for row in manifest.rows}
    referenced = set(manifest.image_hashes())
    newly_gone = 0
    for row in earlier.gone + [row for row in earlier.rows if row.status in (STORED, DUPLICATE)]:
        if not row.sha256 or row.sha256 in referenced:
            continue
        referenced.add(row.sha256)
        if row.status == GONE:
            manifest.gone.append(row)
            continue
        newly_gone += 1
        now = current.get(row.path)
        reason = ("no longer in the batch folder" if now is None
                  else f"the file now holds other content ({now.status})")
        manifest.gone.append(ManifestRow(row.path, GONE, sha256=row.sha256, width=row.width,
                                         height=row.height, reason=reason))
    if newly_gone:
        manifest.notes.append(
            f"{newly_gone} image(s) stored earlier are no longer in the batch folder: kept in "
            f"the manifest as '{GONE}' rows")


class _BatchIngestor:
    """The per-file decisions of one batch run; remembers only the hashes seen so far."""

    def __init__(self, source_dir: Path, batch: str, layout: StateLayout, policy: ImagePolicy,
                 notes: list[str]):
        self.source_dir = source_dir
        self.batch = batch
        self.policy = policy
        self.store = ImageStore(layout.images)
        self.quarantine_dir = layout.quarantine_folder(batch)
        self.first_path_by_sha: dict[str, str] = {}
        self.notes = notes

    def ingest(self, relative: str) -> ManifestRow:
        reason = ignore_reason(relative)
        if reason is not None:
            return ManifestRow(path=relative, status=IGNORED, reason=reason)
        data = None
        try:
            data = read_regular_file(Path(relative), self.policy.max_file_bytes,
                                     beneath=self.source_dir)
            accepted = decode_image(data, self.policy)
        except RejectedImage as rejected:
            self._quarantine(relative, rejected.reason, data)
            width, height = rejected.size or (None, None)
            return ManifestRow(relative, QUARANTINED, width=width, height=height,
                               reason=rejected.reason)
        except (NotARegularFile, FileTooBig, OSError) as error:
            reason = _unread_reason(error, self.policy)
            self._quarantine(relative, reason, None)
            return ManifestRow(relative, QUARANTINED, reason=reason)
        except Exception as error:  # a decoder's surprise is this file's problem, not the batch's
            reason = f"truncated or corrupt image data: {type(error).__name__}: {error}"
            self._quarantine(relative, reason, data)
            return ManifestRow(relative, QUARANTINED, reason=reason)
        return self._store(relative, accepted.data, accepted.ext, accepted.size)

    def _store(self, relative: str, data: bytes, ext: str, size: tuple[int, int]) -> ManifestRow:
        sha = sha256_hex(data)
        # Claim before writing: a crash in between leaves an owner whose re-run stores the file.
        owner = self.store.claim(sha, self.batch)
        self.store.put(data, ext, on_repair=lambda _, problem: self.notes.append(
            f"stored image of {relative} was damaged ({problem}); stored again from the file"))
        width, height = size
        first_path = self.first_path_by_sha.setdefault(sha, relative)
        if first_path != relative:
            reason = f"same image as {first_path}"
        elif owner != self.batch:
            reason = f"already stored by batch {owner}"
        else:
            return ManifestRow(relative, STORED, sha256=sha, width=width, height=height)
        return ManifestRow(relative, DUPLICATE, sha256=sha, width=width, height=height,
                           reason=reason)

    def _quarantine(self, relative: str, reason: str, data: bytes | None) -> None:
        """Keep the bytes read (``data``; None when nothing was read) with the path and reason."""
        key = quarantine_key(relative)
        if data is not None:
            atomic_write_bytes(self.quarantine_dir / QUARANTINED_FILES / key, data)
        reason_file = self.quarantine_dir / QUARANTINE_REASONS / (key + REASON_SUFFIX)
        shown = relative.encode("utf-8", "backslashreplace").decode("utf-8")
        atomic_write_text(reason_file, f"{shown}\n{reason}\n")


def quarantine_key(relative: str) -> str:
    """The name a quarantined file and its reason are kept under: the sha256 of its path
    (bounded, and no two paths share it, as two names derived from the paths could)."""
    return hashlib.sha256(os.fsencode(relative)).hexdigest()


def _unread_reason(error: Exception, policy: ImagePolicy) -> str:
    if isinstance(error, NotARegularFile):
        return error.reason
    if isinstance(error, FileTooBig):
        return file_too_big_reason(None, policy)
    return f"unreadable: {getattr(error, 'strerror', None) or error}"


def load_manifest(layout: StateLayout, batch: str) -> BatchManifest:
    """The batch's manifest, or a FileNotFoundError saying how to produce it."""
    path = layout.manifest_path(batch)
    if not path.is_file():
        raise FileNotFoundError(
            f"batch {batch!r} has no manifest at {path}: materialize raw_images for it first"
        )
    return BatchManifest.load(path)


def iter_stored_images(layout: StateLayout, batch: str) -> Iterator[tuple[str, Path]]:
    """(sha256, path in the store) of each distinct image of the batch, in manifest order.

    Duplicates of images first stored by another batch are included: they are part of this
    batch's photos all the same.
    """
    store = ImageStore(layout.images)
    for sha in load_manifest(layout, batch).image_hashes():
        yield sha, store.path_for(sha)


@dataclass(frozen=True)
class ManifestAudit:
    """Differences between a batch folder as it is now and its manifest."""

    unlisted: list[str]
    vanished: list[str]

    @property
    def complete(self) -> bool:
        return not self.unlisted and not self.vanished


def audit_manifest(manifest: BatchManifest) -> ManifestAudit:
    """Compare the files now in the manifest's source folder with the manifest's rows."""
    on_disk = set(list_source_files(Path(manifest.source)))
    listed = {row.path for row in manifest.rows}
    return ManifestAudit(unlisted=sorted(on_disk - listed), vanished=sorted(listed - on_disk))


def quarantined_share(manifest: BatchManifest) -> float:
    """Quarantined files over examined files (ignored system files do not count)."""
    counts = manifest.counts
    examined = len(manifest.rows) - counts[IGNORED]
    return counts[QUARANTINED] / examined if examined else 0.0


def find_undecodable_images(layout: StateLayout, manifest: BatchManifest) -> dict[str, str]:
    """sha256 -> problem for each image of the batch that is missing, altered or undecodable."""
    store = ImageStore(layout.images)
    problems: dict[str, str] = {}
    for sha in manifest.image_hashes():
        try:
            path = store.path_for(sha)
            if (problem := content_problem(path, sha)) is not None:
                problems[sha] = f"{path.name}: {problem}; `carsdepo fsck --repair` restores it"
                continue
            store.open(sha)
        except FileNotFoundError:
            problems[sha] = "missing from the image store; `carsdepo fsck --repair` restores it"
        except Exception as error:  # any decoder failure is the finding, not a crash
            problems[sha] = f"does not decode: {error}"
    return problems
