"""Ingesting whole batch folders into a real state directory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
from pathlib import Path

import pytest
from PIL import Image

from carsdepo_assets.cli import main
from carsdepo_assets.images.ingest import (
    REASON_SUFFIX,
    BatchSourceError,
    audit_manifest,
    ingest_batch,
    iter_stored_images,
    quarantine_key,
)
from carsdepo_assets.images.landing import landing_batch_folder
from carsdepo_assets.images.manifest import BatchManifest
from carsdepo_assets.images.store import ImageStore, sha256_hex
from carsdepo_assets.images.summary import format_summary, manifest_summary_json
from carsdepo_assets.images.validate import ImagePolicy
from carsdepo_assets.state import InvalidName, StateLayout
from carsdepo_assets_tests.images.samples import (
    bad_files,
    encode,
    exif_rotated_jpeg,
    jpeg,
    photo,
    write,
)

GOOD = {
    "a.jpg": lambda: jpeg(1),
    "sub/b.png": lambda: encode(photo(2), "PNG"),
    "sub/deeper/c.webp": lambda: encode(photo(3), "WEBP"),
    "grey.jpg": lambda: encode(photo(4, mode="L"), "JPEG"),
}
SYSTEM = {
    ".DS_Store": "system file",
    "Thumbs.db": "system file",
    "sub/desktop.ini": "system file",
    "._a.jpg": "system file: macOS AppleDouble",
    ".hidden.jpg": "hidden file",
    ".git/objects/x.jpg": "inside hidden folder .git",
    "__MACOSX/a.jpg": "inside macOS archive metadata folder",
}


def make_batch(folder: Path) -> Path:
    for name, content in GOOD.items():
        write(folder / name, content())
    for name, (content, _) in bad_files().items():
        write(folder / "bad" / name, content)
    for name in SYSTEM:
        write(folder / name, jpeg(99))
    return folder


def rows_by_path(manifest: BatchManifest) -> dict:
    return {row.path: row for row in manifest.rows}


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_every_file_gets_one_row_with_its_outcome(carsdepo_home: StateLayout) -> None:
    source = make_batch(carsdepo_home.landing / "b1")
    manifest = ingest_batch(source, "b1", carsdepo_home)
    rows = rows_by_path(manifest)
    assert len(manifest.rows) == len(GOOD) + len(bad_files()) + len(SYSTEM)
    assert [row.path for row in manifest.rows] == sorted(rows)
    assert manifest.counts == {"stored": 4, "duplicate": 0, "quarantined": 11, "ignored": 7}
    for name in GOOD:
        assert rows[name].status == "stored"
        assert ImageStore(carsdepo_home.images).contains(rows[name].sha256)
    assert (rows["a.jpg"].width, rows["a.jpg"].height) == (200, 150)
    for name, reason in SYSTEM.items():
        assert rows[name].status == "ignored" and rows[name].reason.startswith(reason), name
    assert BatchManifest.load(carsdepo_home.manifest_path("b1")) == manifest


def test_bad_files_are_copied_to_quarantine_with_their_reason(carsdepo_home: StateLayout) -> None:
    source = make_batch(carsdepo_home.landing / "b1")
    rows = rows_by_path(ingest_batch(source, "b1", carsdepo_home))
    quarantine = carsdepo_home.quarantine_folder("b1")
    for name, (content, prefix) in bad_files().items():
        row = rows[f"bad/{name}"]
        assert row.status == "quarantined" and row.reason.startswith(prefix), row
        key = quarantine_key(f"bad/{name}")
        assert (quarantine / "files" / key).read_bytes() == content
        reason_file = quarantine / "reasons" / f"{key}{REASON_SUFFIX}"
        assert reason_file.read_text().splitlines() == [f"bad/{name}", row.reason]
    assert (rows["bad/icon.png"].width, rows["bad/icon.png"].height) == (10, 10)


def test_an_rgb_jpeg_keeps_its_file_hash_and_a_grey_one_is_normalised(
    carsdepo_home: StateLayout,
) -> None:
    source = make_batch(carsdepo_home.landing / "b1")
    rows = rows_by_path(ingest_batch(source, "b1", carsdepo_home))
    assert rows["a.jpg"].sha256 == sha256_hex((source / "a.jpg").read_bytes())
    grey = ImageStore(carsdepo_home.images).path_for(rows["grey.jpg"].sha256)
    assert grey.suffix == ".png"


def test_an_upright_rgb_jpeg_is_stored_as_its_original_bytes_and_rotated_or_cmyk_normalised(
    carsdepo_home: StateLayout,
) -> None:
    """Only what needs normalising is re-encoded: the upright RGB JPEG is the file itself."""
    source = carsdepo_home.landing / "b1"
    write(source / "upright.jpg", jpeg(21))
    write(source / "rotated.jpg", exif_rotated_jpeg(22, orientation=6))
    write(source / "cmyk.jpg", encode(photo(23).convert("CMYK"), "JPEG"))
    rows = rows_by_path(ingest_batch(source, "b1", carsdepo_home))
    store = ImageStore(carsdepo_home.images)

    assert store.path_for(rows["upright.jpg"].sha256).read_bytes() == (
        source / "upright.jpg").read_bytes()
    for name, size in (("rotated.jpg", (150, 200)), ("cmyk.jpg", (200, 150))):
        with Image.open(store.path_for(rows[name].sha256)) as stored:
            assert (stored.format, stored.mode, stored.size) == ("PNG", "RGB", size), name


def test_duplicates_within_and_across_batches_are_recorded_not_stored_twice(
    carsdepo_home: StateLayout,
) -> None:
    write(carsdepo_home.landing / "b1" / "a.jpg", jpeg(1))
    write(carsdepo_home.landing / "b1" / "copy-of-a.jpg", jpeg(1))
    write(carsdepo_home.landing / "b2" / "again.jpg", jpeg(1))
    write(carsdepo_home.landing / "b2" / "new.jpg", jpeg(2))
    first = rows_by_path(ingest_batch(carsdepo_home.landing / "b1", "b1", carsdepo_home))
    second = rows_by_path(ingest_batch(carsdepo_home.landing / "b2", "b2", carsdepo_home))
    assert first["copy-of-a.jpg"].status == "duplicate"
    assert first["copy-of-a.jpg"].reason == "same image as a.jpg"
    assert second["again.jpg"].status == "duplicate"
    assert second["again.jpg"].reason == "already stored by batch b1"
    assert second["new.jpg"].status == "stored"
    assert len(list(carsdepo_home.images.glob("??/*.jpg"))) == 2
    assert [sha for sha, _ in iter_stored_images(carsdepo_home, "b2")] == [
        first["a.jpg"].sha256, second["new.jpg"].sha256,
    ]


def test_rerunning_a_batch_gives_the_same_manifest_and_stores_nothing(
    carsdepo_home: StateLayout,
) -> None:
    source = make_batch(carsdepo_home.landing / "b1")
    ingest_batch(source, "b1", carsdepo_home)
    manifest_text = carsdepo_home.manifest_path("b1").read_text()
    images_before = tree(carsdepo_home.images)
    again = ingest_batch(source, "b1", carsdepo_home)
    assert carsdepo_home.manifest_path("b1").read_text() == manifest_text
    assert again.counts["stored"] == 4 and again.counts["duplicate"] == 0
    assert tree(carsdepo_home.images) == images_before


def test_a_crash_mid_batch_leaves_no_partial_file_and_a_rerun_completes(
    carsdepo_home: StateLayout,
) -> None:
    """The crash is real: the progress callback raises, as a kill between two files would."""
    source = make_batch(carsdepo_home.landing / "b1")

    def crash_after_five(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_batch(source, "b1", carsdepo_home, progress=crash_after_five)
    assert not carsdepo_home.manifest_path("b1").exists()
    assert not [p for p in carsdepo_home.root.rglob("*") if p.name.endswith(".tmp")]
    for stored in carsdepo_home.images.glob("??/*.*"):
        assert sha256_hex(stored.read_bytes()) == stored.stem
    manifest = ingest_batch(source, "b1", carsdepo_home)
    assert manifest.counts == {"stored": 4, "duplicate": 0, "quarantined": 11, "ignored": 7}


def test_a_store_write_failing_midway_leaves_no_partial_file(carsdepo_home: StateLayout) -> None:
    """A real write fault: a folder squats the image's final name, so the rename fails."""
    source = carsdepo_home.landing / "b1"
    data = jpeg(1)
    write(source / "a.jpg", data)
    sha = sha256_hex(data)
    squatter = carsdepo_home.images / sha[:2] / f"{sha}.jpg" / "squatter"
    squatter.mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        ingest_batch(source, "b1", carsdepo_home)
    assert not [p for p in carsdepo_home.root.rglob("*") if p.name.endswith(".tmp")]
    assert not carsdepo_home.manifest_path("b1").exists()
    squatter.rmdir()
    squatter.parent.rmdir()
    assert ingest_batch(source, "b1", carsdepo_home).counts["stored"] == 1


def test_a_file_that_vanishes_mid_batch_is_quarantined_as_unreadable(
    carsdepo_home: StateLayout,
) -> None:
    source = carsdepo_home.landing / "b1"
    for index in range(3):
        write(source / f"{index}.jpg", jpeg(index))

    def delete_the_last(done: int, total: int) -> None:
        (source / "2.jpg").unlink(missing_ok=True)

    rows = rows_by_path(ingest_batch(source, "b1", carsdepo_home, progress=delete_the_last))
    assert rows["2.jpg"].status == "quarantined"
    assert rows["2.jpg"].reason.startswith("unreadable: No such file or directory")
    assert rows["0.jpg"].status == rows["1.jpg"].status == "stored"


def test_a_missing_source_folder_fails_the_batch_clearly(carsdepo_home: StateLayout) -> None:
    with pytest.raises(BatchSourceError, match=r"batch source .*/nowhere does not exist"):
        ingest_batch(carsdepo_home.landing / "nowhere", "b1", carsdepo_home)
    assert not carsdepo_home.manifest_path("b1").exists()


def test_stored_images_of_an_unknown_batch_say_what_to_do(carsdepo_home: StateLayout) -> None:
    with pytest.raises(FileNotFoundError, match="materialize raw_images"):
        list(iter_stored_images(carsdepo_home, "never-ingested"))


def test_summaries_for_the_cli(carsdepo_home: StateLayout) -> None:
    source = make_batch(carsdepo_home.landing / "b1")
    manifest = ingest_batch(source, "b1", carsdepo_home)
    summary = json.loads(json.dumps(manifest_summary_json(manifest)))
    assert summary["batch"] == "b1" and summary["counts"] == manifest.counts
    assert summary["files"][0].keys() == {"path", "status", "reason", "sha256"}
    assert len(summary["files"]) == len(manifest.rows)
    text = format_summary(manifest)
    assert "4 stored, 0 duplicate, 11 quarantined, 7 ignored" in text
    assert "bad/animation.gif: unsupported format GIF" in text


def quarantined(layout: StateLayout, batch: str, relative: str) -> tuple[bytes | None, list[str]]:
    """The bytes kept for a quarantined file (None when none were) and its reason file's lines."""
    folder, key = layout.quarantine_folder(batch), quarantine_key(relative)
    kept = folder / "files" / key
    reason = (folder / "reasons" / f"{key}{REASON_SUFFIX}").read_text().splitlines()
    return (kept.read_bytes() if kept.is_file() else None), reason


def test_inputs_named_like_reason_files_or_each_others_folders_all_get_their_row(
    carsdepo_home: StateLayout,
) -> None:
    """``a`` beside ``a.reason.txt/b`` (and ``a.jpg`` beside ``a.jpg.txt``) once collided in
    the quarantine and failed the whole batch; the images stored before were left orphaned."""
    source = carsdepo_home.landing / "b1"
    write(source / "0-first.jpg", jpeg(1))
    contents = {"a": b"not a photo", "a.reason.txt/b": b"other", "a.jpg": b"not a photo",
                f"a.jpg{REASON_SUFFIX}": b"forged reason", f"a{REASON_SUFFIX}": b"x"}
    for name, content in contents.items():
        write(source / name, content)
    manifest = ingest_batch(source, "b1", carsdepo_home)
    rows = rows_by_path(manifest)
    assert rows["0-first.jpg"].status == "stored"
    for name, content in contents.items():
        assert rows[name].status == "quarantined", name
        assert quarantined(carsdepo_home, "b1", name) == (content, [name, rows[name].reason])
    assert audit_manifest(manifest).complete


def test_a_name_of_255_bytes_is_quarantined_or_stored_like_any_other(
    carsdepo_home: StateLayout,
) -> None:
    """The longest legal name once overflowed the temporary name (ENAMETOOLONG) and failed the
    batch."""
    source = carsdepo_home.landing / "b1"
    long_photo, long_text = "p" * 251 + ".jpg", "t" * 251 + ".txt"
    write(source / long_photo, jpeg(1))
    write(source / long_text, b"not a photo")
    rows = rows_by_path(ingest_batch(source, "b1", carsdepo_home))
    assert rows[long_photo].status == "stored"
    assert rows[long_text].status == "quarantined"
    assert quarantined(carsdepo_home, "b1", long_text)[0] == b"not a photo"
    assert not list(carsdepo_home.root.rglob("*.tmp"))


def test_a_socket_is_named_a_socket_and_a_non_utf8_name_prints(
    carsdepo_home: StateLayout,
) -> None:
    source = carsdepo_home.landing / "b1"
    write(source / "good.jpg", jpeg(1))
    odd = os.fsdecode(b"caf\xe9\nline.jpg")  # Latin-1, not UTF-8, with a newline
    write(source / odd, b"not a photo")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(source / "camera.sock"))
        manifest = ingest_batch(source, "b1", carsdepo_home)
    rows = rows_by_path(manifest)
    assert rows["camera.sock"].reason == "not a regular file: socket, not read"
    assert rows[odd].status == "quarantined"
    text = format_summary(manifest)
    text.encode("utf-8")  # what a UTF-8 console does with it: no UnicodeEncodeError
    assert "caf\\udce9\\nline.jpg: not an image" in text
    assert len(text.splitlines()) == 2 + 2  # the odd name's newline does not break its line
    json.dumps(manifest_summary_json(manifest)).encode("utf-8")
    assert BatchManifest.load(carsdepo_home.manifest_path("b1")) == manifest


def _hostile_batch(source: Path, outside: Path) -> None:
    """A FIFO, a link to /dev/zero, links to a file and a folder outside, an empty folder."""
    write(source / "good.jpg", jpeg(1))
    os.mkfifo(source / "pipe.jpg")
    (source / "zero.jpg").symlink_to("/dev/zero")
    write(outside / "secret.txt", b"the secret")
    (source / "passwd.jpg").symlink_to(outside / "secret.txt")
    (source / "linked-folder").symlink_to(outside, target_is_directory=True)
    (source / "empty").mkdir()


def test_pipes_devices_and_links_get_a_row_and_are_never_read(
    carsdepo_home: StateLayout, tmp_path: Path
) -> None:
    """Real special files: with a FIFO read the test would hang (bounded by the alarm), with
    /dev/zero it would read until memory ran out."""
    source, outside = carsdepo_home.landing / "b1", tmp_path / "outside"
    _hostile_batch(source, outside)
    signal.alarm(60)
    try:
        manifest = ingest_batch(source, "b1", carsdepo_home)
    finally:
        signal.alarm(0)
    rows = rows_by_path(manifest)
    assert set(rows) == {"good.jpg", "pipe.jpg", "zero.jpg", "passwd.jpg", "linked-folder",
                         "empty/"}
    assert rows["good.jpg"].status == "stored"
    assert rows["pipe.jpg"].reason == "not a regular file: named pipe (FIFO), not read"
    assert rows["zero.jpg"].reason == "symbolic link: not followed (it points to /dev/zero)"
    assert rows["passwd.jpg"].reason.startswith("symbolic link: not followed")
    assert rows["linked-folder"].reason.startswith("symbolic link: not followed")
    for name in ("pipe.jpg", "zero.jpg", "passwd.jpg", "linked-folder"):
        assert rows[name].status == "quarantined"
    assert rows["empty/"].status == "ignored" and rows["empty/"].reason == "empty folder"
    quarantine = carsdepo_home.quarantine_folder("b1")
    assert not (quarantine / "files").exists()
    assert all(b"the secret" not in p.read_bytes() for p in carsdepo_home.root.rglob("*")
               if p.is_file() and not p.is_symlink())
    assert quarantined(carsdepo_home, "b1", "pipe.jpg") == (None, ["pipe.jpg",
                                                                  rows["pipe.jpg"].reason])
    assert audit_manifest(manifest).complete


def test_a_file_over_the_limit_is_read_no_further_than_the_limit(
    carsdepo_home: StateLayout,
) -> None:
    source = carsdepo_home.landing / "b1"
    write(source / "big.jpg", jpeg(1) + b"\0" * 4096)
    policy = ImagePolicy(max_file_bytes=2048)
    rows = rows_by_path(ingest_batch(source, "b1", carsdepo_home, policy))
    assert rows["big.jpg"].reason == "file too big: more than the limit, limit 2,048 bytes"
    assert not (carsdepo_home.quarantine_folder("b1") / "files").exists()


def test_a_linked_landing_folder_is_refused_as_a_batch(
    carsdepo_home: StateLayout, tmp_path: Path
) -> None:
    write(tmp_path / "elsewhere" / "a.jpg", jpeg(1))
    carsdepo_home.landing_folder("b1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BatchSourceError, match="links in the landing zone are never ingested"):
        landing_batch_folder(carsdepo_home, "b1")


def test_another_folder_under_an_ingested_batch_name_is_refused_before_storing(
    carsdepo_home: StateLayout, tmp_path: Path
) -> None:
    first = write(tmp_path / "first" / "a.jpg", jpeg(1)).parent
    second = write(tmp_path / "second" / "b.jpg", jpeg(2)).parent
    ingest_batch(first, "b1", carsdepo_home)
    stored = tree(carsdepo_home.images)
    with pytest.raises(BatchSourceError, match="already holds the photos of"):
        ingest_batch(second, "b1", carsdepo_home)
    assert tree(carsdepo_home.images) == stored
    assert ingest_batch(first, "b1", carsdepo_home).counts["stored"] == 1


@pytest.mark.parametrize("name", ["", "../evil", "/tmp/evil", ".hidden", "a/b", "x" * 129])
def test_unsafe_batch_names_are_refused_before_anything_is_written(
    carsdepo_home: StateLayout, name: str
) -> None:
    write(carsdepo_home.landing / "src" / "a.jpg", jpeg(1))
    before = tree(carsdepo_home.root)
    with pytest.raises(InvalidName, match="invalid batch name"):
        ingest_batch(carsdepo_home.landing / "src", name, carsdepo_home)
    assert tree(carsdepo_home.root) == before


@pytest.mark.slow
def test_carsdepo_ingest_of_odd_names_and_a_socket_exits_0_and_prints_on_a_utf8_console(
    carsdepo_home: StateLayout, tmp_path: Path,
) -> None:
    """The command on a strict UTF-8 stdout, as a terminal has: a non-UTF-8 name once made it
    fail with UnicodeEncodeError after the batch was processed."""
    source = tmp_path / "odd"
    write(source / "good.jpg", jpeg(1))
    write(source / os.fsdecode(b"caf\xe9.jpg"), b"not a photo")
    write(source / ("n" * 251 + ".jpg"), b"not a photo either")
    write(source / "a", b"x")
    write(source / "a.reason.txt" / "b", b"y")
    console = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    with socket.socket(socket.AF_UNIX) as listening, contextlib.redirect_stdout(console):
        listening.bind(str(source / "camera.sock"))
        code = main(["ingest", str(source), "--batch", "b1"])
    console.flush()
    out = console.buffer.getvalue().decode("utf-8")
    assert code == 0
    assert "1 stored, 0 duplicate, 5 quarantined, 0 ignored" in out
    assert "caf\\udce9.jpg: not an image" in out
    assert "camera.sock: not a regular file: socket, not read" in out
