"""Check the image store and the batch manifests against each other, and mend what can be mended.

Every stored image must still hash to its name and decode; every image a manifest names must be
in the store; every stored image must be named by some manifest (``BatchManifest
.referenced_hashes``: its rows and its ``gone`` history). Each problem is a ``Finding``: the
file, what is wrong, and the repair (what ``repair=True`` does, or what a person should do).

With ``repair=True``: a damaged or missing image is stored again from a batch folder that
still holds a file with its content (the file itself, or its normalised form); an image no
manifest names is added to its owner batch's manifest as a ``gone from folder`` row, so it is
referenced again and nothing is deleted. Damaged manifests are not rewritten here: re-ingesting
the batch moves one aside and rebuilds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from carsdepo_assets.fileio import DamagedFile
from carsdepo_assets.images.files import read_regular_file
from carsdepo_assets.images.ingest import UNKNOWN_PATH
from carsdepo_assets.images.manifest import GONE, BatchManifest, ManifestRow
from carsdepo_assets.images.store import ImageStore, content_problem, sha256_hex
from carsdepo_assets.images.summary import printable
from carsdepo_assets.images.validate import AcceptedImage, ImagePolicy, decode_image
from carsdepo_assets.state import StateLayout

MANIFEST_SUFFIX = ".json"
# Generous limits for re-reading a source file: whatever policy stored it, its bytes decide.
_REPAIR_POLICY = ImagePolicy(min_side=1, max_side=65_535, max_pixels=178_000_000,
                             max_file_bytes=1 << 31)


@dataclass(frozen=True)
class Finding:
    """One problem: the file concerned, what is wrong, the repair (done or to do)."""

    path: Path
    problem: str
    repair: str
    repaired: bool = False

    def lines(self) -> list[str]:
        """Two lines for a terminal (names escaped: see ``summary.printable``)."""
        status, action = ("repaired", "done") if self.repaired else ("problem", "fix")
        return [f"{status}: {printable(str(self.path))}: {printable(self.problem)}",
                f"  {action}: {printable(self.repair)}"]


def check_images_and_manifests(layout: StateLayout, repair: bool = False) -> list[Finding]:
    """Every problem of the image store and the manifests (see the module docstring)."""
    store = ImageStore(layout.images)
    manifests, findings = _load_manifests(layout)
    sources = _SourceFinder(manifests)
    referenced: set[str] = set()
    for manifest in manifests.values():
        referenced |= manifest.referenced_hashes()
        findings += _missing_images(layout, store, manifest, sources, repair)
    damaged_batches = {path.stem for path in _manifest_paths(layout)} - set(manifests)
    for sha, path in store.stored_files():
        findings += _stored_image_problems(store, sha, path, sources, repair)
        if sha not in referenced:
            findings += _unreferenced(layout, store, sha, path, damaged_batches, repair)
    return findings


def _manifest_paths(layout: StateLayout) -> list[Path]:
    folder = layout.manifests
    return sorted(folder.glob(f"*{MANIFEST_SUFFIX}")) if folder.is_dir() else []


def _load_manifests(layout: StateLayout) -> tuple[dict[str, BatchManifest], list[Finding]]:
    manifests, findings = {}, []
    for path in _manifest_paths(layout):
        try:
            manifests[path.stem] = BatchManifest.load(path)
        except DamagedFile as damaged:
            findings.append(Finding(path, damaged.problem, damaged.action))
        except OSError as error:
            findings.append(unreadable(path, error))
    return manifests, findings


def unreadable(path: Path, error: OSError) -> Finding:
    """The finding for a state file that cannot be read at all (permissions, I/O error)."""
    return Finding(path, f"cannot be read: {error.strerror or error}",
                   "check the file's owner and permissions, or the disk (an I/O error)")


class _SourceFinder:
    """Where each image came from: (batch folder, file) pairs from the manifests' rows."""

    def __init__(self, manifests: dict[str, BatchManifest]):
        self.by_sha: dict[str, list[tuple[Path, str]]] = {}
        for manifest in manifests.values():
            for row in manifest.rows + manifest.gone:
                if row.sha256 and row.path != UNKNOWN_PATH:
                    self.by_sha.setdefault(row.sha256, []).append(
                        (Path(manifest.source), row.path))

    def accepted(self, sha: str) -> AcceptedImage | None:
        """A source file whose accepted form (as is, or normalised) hashes to ``sha``."""
        for folder, relative in self.by_sha.get(sha, []):
            try:
                data = read_regular_file(Path(relative), _REPAIR_POLICY.max_file_bytes,
                                         beneath=folder)
                accepted = decode_image(data, _REPAIR_POLICY)
            except Exception:  # gone, changed or unreadable: try the next source
                continue
            if sha256_hex(accepted.data) == sha:
                return accepted
        return None

    def described(self, sha: str) -> str:
        return ", ".join(str(folder / relative) for folder, relative in self.by_sha.get(sha, []))


def _restore(store: ImageStore, shown: Path, sha: str, problem: str, sources: _SourceFinder,
             repair: bool) -> Finding:
    """Store ``sha`` again from a source file when ``repair`` and one still matches."""
    accepted = sources.accepted(sha) if repair else None
    if accepted is not None:
        store.put(accepted.data, accepted.ext)  # replaces a damaged copy, writes a missing one
        return Finding(shown, problem, "stored again from its batch folder", repaired=True)
    if repair:
        where = sources.described(sha) or "no batch folder is recorded for it"
        return Finding(shown, problem, f"no source file holds this image any more ({where}): "
                       "restore it from a backup")
    return Finding(shown, problem, "run `carsdepo fsck --repair` to store it again from its "
                   "batch folder (or re-ingest its batch)")


def _stored_image_problems(store: ImageStore, sha: str, path: Path, sources: _SourceFinder,
                           repair: bool) -> list[Finding]:
    try:
        problem = content_problem(path, sha)
    except OSError as error:
        return [unreadable(path, error)]
    if problem is None:
        try:
            store.open(sha)
            return []
        except Exception as error:  # any decoder failure is the finding
            return [Finding(path, f"it does not decode ({type(error).__name__}: {error})",
                            "its bytes are those ingested, so no source can mend it: delete it "
                            "and re-ingest its batch")]
    return [_restore(store, path, sha, problem, sources, repair)]


def _missing_images(layout: StateLayout, store: ImageStore, manifest: BatchManifest,
                    sources: _SourceFinder, repair: bool) -> Iterator[Finding]:
    by_sha = {row.sha256: row for row in manifest.rows + manifest.gone if row.sha256}
    for sha in sorted(manifest.referenced_hashes()):
        if not store.contains(sha):
            yield _restore(store, layout.manifest_path(manifest.batch), sha,
                           f"image {sha} (of {by_sha[sha].path}) is missing from the image store",
                           sources, repair)


def _unreferenced(layout: StateLayout, store: ImageStore, sha: str, path: Path,
                  damaged_batches: set[str], repair: bool) -> list[Finding]:
    owner = store.owner(sha)
    problem = f"stored image referenced by no manifest (owner: {owner or 'none recorded'})"
    if owner in damaged_batches:
        return []  # said by the damaged manifest's finding; re-ingesting recovers it
    manifest_path = layout.manifest_path(owner) if owner else None
    if manifest_path is None:
        return [Finding(path, problem, "no batch claims it: re-ingest the batch it came from, "
                        "or delete it if none needs it")]
    if not manifest_path.is_file():
        return [Finding(path, problem, f"batch {owner} has no manifest (its ingestion never "
                        "finished): ingest it again from its folder")]
    if not repair:
        return [Finding(path, problem, f"run `carsdepo fsck --repair` to list it in batch "
                        f"{owner}'s manifest as '{GONE}' (nothing is deleted)")]
    with layout.batch_lock(owner):  # an ingestion of the batch in flight finishes first
        manifest = BatchManifest.load(manifest_path)
        if sha in manifest.referenced_hashes():
            return []  # that ingestion listed it
        manifest.gone.append(ManifestRow(UNKNOWN_PATH, GONE, sha256=sha,
                                         reason="found referenced by no manifest by fsck"))
        manifest.save(manifest_path)
    return [Finding(path, problem, f"listed in {manifest_path} as '{GONE}'", repaired=True)]
