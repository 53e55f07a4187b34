"""How a batch manifest is shown to people: the CLI's JSON and text, the UI's table and preview.

File names come from outside and may be anything a file system allows: bytes that are not
UTF-8 (kept by Python as surrogates), newlines, terminal escapes. The text shown escapes every
character that is not printable (``printable``), so printing it cannot fail on a UTF-8 console
or break a line; the JSON is ASCII-escaped by ``json.dumps``.
"""

from __future__ import annotations

from PIL import Image, ImageOps

from carsdepo_assets.images.manifest import (
    GONE,
    IGNORED,
    QUARANTINED,
    STATUSES,
    STORED,
    BatchManifest,
)
from carsdepo_assets.images.store import ImageStore

NOT_STORED = (QUARANTINED, IGNORED)


def manifest_summary_json(manifest: BatchManifest) -> dict:
    """The object ``carsdepo ingest --json`` prints: batch, one entry per file, counts."""
    return {
        "batch": manifest.batch,
        "files": [
            {"path": row.path, "status": row.status, "reason": row.reason, "sha256": row.sha256}
            for row in manifest.rows
        ],
        "counts": manifest.counts,
        "gone": [{"path": row.path, "reason": row.reason, "sha256": row.sha256}
                 for row in manifest.gone],
        "notes": manifest.notes,
    }


def format_summary(manifest: BatchManifest, max_listed: int = 20) -> str:
    """A few lines for a terminal: the counts, then each file that was not stored and why."""
    counts = manifest.counts
    totals = [f"{counts[status]} {status}" for status in STATUSES]
    if manifest.gone:
        totals.append(f"{len(manifest.gone)} {GONE} (stored earlier, kept)")
    lines = [
        f"batch {manifest.batch}: {len(manifest.rows)} files from {printable(manifest.source)}",
        "  " + ", ".join(totals),
    ]
    rejected = [row for row in manifest.rows if row.status in NOT_STORED]
    for row in rejected[:max_listed]:
        lines.append(f"  {row.status:<11} {printable(row.path)}: {printable(row.reason or '')}")
    if len(rejected) > max_listed:
        lines.append(f"  ... and {len(rejected) - max_listed} more (see the manifest)")
    lines += [f"  note: {printable(note)}" for note in manifest.notes]
    return "\n".join(lines)


def printable(text: str) -> str:
    """``text`` with each unprintable character (a byte that was not UTF-8, a newline, an
    escape) written as its Python escape, e.g. ``\\udce9``, ``\\n``."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def rejected_markdown(manifest: BatchManifest, max_rows: int = 50) -> str:
    """Markdown table of the quarantined and ignored files with their reasons."""
    rejected = [row for row in manifest.rows if row.status in NOT_STORED]
    if not rejected:
        return "Every file was stored or recognised as a duplicate."
    lines = ["| file | status | reason |", "| --- | --- | --- |"]
    lines += [
        f"| {_cell(row.path)} | {row.status} | {_cell(row.reason or '')} |"
        for row in rejected[:max_rows]
    ]
    if len(rejected) > max_rows:
        lines.append(f"| ... {len(rejected) - max_rows} more, see the manifest | | |")
    return "\n".join(lines)


def contact_sheet(
    store: ImageStore, manifest: BatchManifest, count: int = 8, thumb: int = 160, columns: int = 4
) -> Image.Image | None:
    """Thumbnails of the batch's first ``count`` stored images on a grey sheet; None if none."""
    hashes = [row.sha256 for row in manifest.rows if row.status == STORED][:count]
    if not hashes:
        return None
    rows = -(-len(hashes) // columns)
    sheet = Image.new("RGB", (columns * thumb, rows * thumb), (64, 64, 64))
    for index, sha in enumerate(hashes):
        image = ImageOps.contain(store.open(sha), (thumb - 4, thumb - 4))
        x = (index % columns) * thumb + (thumb - image.width) // 2
        y = (index // columns) * thumb + (thumb - image.height) // 2
        sheet.paste(image, (x, y))
    return sheet


def _cell(text: str) -> str:
    return printable(text).replace("|", "\\|")
