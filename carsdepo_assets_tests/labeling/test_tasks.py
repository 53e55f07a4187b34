"""Task data from a real ingested batch: one task per distinct image, served by Label Studio."""

from __future__ import annotations

from pathlib import Path

import pytest

from carsdepo_assets.images.manifest import BatchManifest, ManifestRow
from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.tasks import (
    LOCAL_FILES_URL,
    batch_task_data,
    image_url,
    match_manifest_rows,
)
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.labeling.batches import synthetic_batch


def test_each_distinct_stored_image_becomes_one_task_pointing_at_the_store(
    carsdepo_home: StateLayout, tmp_path: Path
):
    manifest, _ = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", duplicate=True)
    tasks = batch_task_data(manifest, carsdepo_home.images, carsdepo_home.root)

    assert len(manifest.rows) == 5 and [t["sha256"] for t in tasks] == manifest.image_hashes()
    store = ImageStore(carsdepo_home.images)
    for data in tasks:
        relative = data["image"].removeprefix(LOCAL_FILES_URL)
        assert carsdepo_home.root / relative == store.path_for(data["sha256"])
        assert (data["batch"], data["width"], data["height"]) == ("b1", 192, 160)


def test_optional_group_split_and_source_are_added_when_given(
    carsdepo_home: StateLayout, tmp_path: Path
):
    manifest, _ = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=1)
    sha = manifest.image_hashes()[0]
    extra = {sha: {"group": "photo-7", "split": None, "source": "imported"}}
    (data,) = batch_task_data(manifest, carsdepo_home.images, carsdepo_home.root, extra)
    assert (data["group"], data["source"]) == ("photo-7", "imported") and "split" not in data

    with pytest.raises(ValueError, match="'colour' is not one of"):
        batch_task_data(manifest, carsdepo_home.images, carsdepo_home.root,
                        {sha: {"colour": "red"}})


def test_an_image_outside_the_document_root_is_refused_with_both_paths(tmp_path: Path):
    with pytest.raises(ValueError, match="outside Label Studio's local-files document root"):
        image_url(tmp_path / "elsewhere" / "a.jpg", tmp_path / "home")


def test_an_image_missing_from_the_store_is_named(carsdepo_home: StateLayout):
    row = ManifestRow("a.jpg", "stored", sha256="c" * 64, width=10, height=10)
    manifest = BatchManifest("b1", "/nowhere", [row])
    with pytest.raises(FileNotFoundError, match="c{64} is not in the image store"):
        batch_task_data(manifest, carsdepo_home.images, carsdepo_home.root)


def test_coco_file_names_find_their_manifest_rows_also_one_folder_down():
    rows = [ManifestRow(path, "stored", digit * 64) for path, digit in
            (("images/a.jpg", "1"), ("b.jpg", "2"), ("x/c.jpg", "3"), ("y/c.jpg", "4"))]
    matched = match_manifest_rows(BatchManifest("b", "/src", rows), ["a.jpg", "./b.jpg", "c.jpg"])
    assert {name: row.path for name, row in matched.items()} == {
        "a.jpg": "images/a.jpg", "./b.jpg": "b.jpg",  # c.jpg is ambiguous: left out
    }
