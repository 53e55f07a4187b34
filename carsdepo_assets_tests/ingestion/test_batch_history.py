"""Re-ingesting a batch: its history is kept, damaged stored images and manifests are repaired."""

from __future__ import annotations

import pytest

from carsdepo_assets.fileio import DamagedFile
from carsdepo_assets.images.ingest import UNKNOWN_PATH, ingest_batch, load_manifest
from carsdepo_assets.images.manifest import GONE, BatchManifest
from carsdepo_assets.images.store import ImageStore, sha256_hex
from carsdepo_assets.images.summary import format_summary
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.images.samples import jpeg, write


def _all_stored(layout: StateLayout) -> set[str]:
    return {sha for sha, _ in ImageStore(layout.images).stored_files()}


def test_a_changed_folder_keeps_every_image_it_stored_referenced(
    carsdepo_home: StateLayout,
) -> None:
    """Three photos; one deleted, one replaced: the two images no longer in the folder stay
    referenced as ``gone from folder`` rows, said in the summary, and survive a third run."""
    source = carsdepo_home.landing / "b1"
    for seed, name in enumerate(("a.jpg", "b.jpg", "c.jpg"), start=1):
        write(source / name, jpeg(seed))
    first = {row.path: row.sha256 for row in ingest_batch(source, "b1", carsdepo_home).rows}
    (source / "a.jpg").unlink()
    write(source / "b.jpg", jpeg(7))

    second = ingest_batch(source, "b1", carsdepo_home)
    gone = {row.path: row for row in second.gone}
    assert set(gone) == {"a.jpg", "b.jpg"}
    assert {row.sha256 for row in gone.values()} == {first["a.jpg"], first["b.jpg"]}
    assert all(row.status == GONE for row in gone.values())
    assert gone["a.jpg"].reason == "no longer in the batch folder"
    assert gone["b.jpg"].reason == "the file now holds other content (stored)"
    assert second.counts["stored"] == 2
    assert second.referenced_hashes() == _all_stored(carsdepo_home)
    assert "2 image(s) stored earlier are no longer in the batch folder" in format_summary(second)

    third = ingest_batch(source, "b1", carsdepo_home)
    assert third.gone == second.gone and not third.notes
    assert load_manifest(carsdepo_home, "b1").referenced_hashes() == _all_stored(carsdepo_home)


def test_an_image_back_in_the_folder_is_no_longer_gone(carsdepo_home: StateLayout) -> None:
    source = carsdepo_home.landing / "b1"
    write(source / "a.jpg", jpeg(1))
    write(source / "b.jpg", jpeg(2))
    ingest_batch(source, "b1", carsdepo_home)
    moved = (source / "a.jpg").read_bytes()
    (source / "a.jpg").unlink()
    assert [row.path for row in ingest_batch(source, "b1", carsdepo_home).gone] == ["a.jpg"]
    write(source / "renamed.jpg", moved)
    manifest = ingest_batch(source, "b1", carsdepo_home)
    assert manifest.gone == [] and manifest.counts["stored"] == 2


def test_reingesting_repairs_a_truncated_stored_image(carsdepo_home: StateLayout) -> None:
    source = carsdepo_home.landing / "b1"
    write(source / "a.jpg", jpeg(1))
    sha = ingest_batch(source, "b1", carsdepo_home).rows[0].sha256
    stored = ImageStore(carsdepo_home.images).path_for(sha)
    stored.write_bytes(stored.read_bytes()[:500])

    manifest = ingest_batch(source, "b1", carsdepo_home)
    assert sha256_hex(stored.read_bytes()) == sha
    assert ImageStore(carsdepo_home.images).open(sha).size == (200, 150)
    assert manifest.notes == [
        "stored image of a.jpg was damaged (its 500 bytes no longer match its sha256 "
        "(truncated or overwritten)); stored again from the file"
    ]


def test_a_truncated_manifest_names_its_file_and_reingesting_rebuilds_it(
    carsdepo_home: StateLayout,
) -> None:
    """The damaged manifest once blocked re-ingestion for good with a bare JSONDecodeError."""
    source = carsdepo_home.landing / "b1"
    write(source / "a.jpg", jpeg(1))
    write(source / "b.jpg", jpeg(2))
    first = ingest_batch(source, "b1", carsdepo_home)
    path = carsdepo_home.manifest_path("b1")
    truncated = path.read_text()[:300]
    path.write_text(truncated)
    with pytest.raises(DamagedFile, match=f"{path} is damaged .*not valid JSON.*ingest batch b1 "
                                          "again from its folder"):
        load_manifest(carsdepo_home, "b1")

    (source / "b.jpg").unlink()
    manifest = ingest_batch(source, "b1", carsdepo_home)
    (aside,) = carsdepo_home.manifests.glob("b1.json.corrupt-*")
    assert aside.read_text() == truncated
    assert manifest.notes[0].startswith("the earlier manifest was damaged (not valid JSON")
    assert f"rebuilt, a copy kept as {aside}" in manifest.notes[0]
    assert [(row.path, row.sha256) for row in manifest.gone] == [
        (UNKNOWN_PATH, first.rows[1].sha256)]
    assert manifest.referenced_hashes() == _all_stored(carsdepo_home)
    assert BatchManifest.load(path) == manifest


def test_an_empty_owner_record_is_claimed_anew_never_shown_blank(
    carsdepo_home: StateLayout,
) -> None:
    source = carsdepo_home.landing / "b2"
    write(source / "a.jpg", jpeg(1))
    sha = sha256_hex(jpeg(1))
    record = carsdepo_home.images / "owners" / sha[:2] / sha
    record.parent.mkdir(parents=True)
    record.write_text("")
    store = ImageStore(carsdepo_home.images)
    assert store.owner(sha) is None
    row = ingest_batch(source, "b2", carsdepo_home).rows[0]
    assert (row.status, row.reason) == ("stored", None)
    assert store.owner(sha) == "b2"
