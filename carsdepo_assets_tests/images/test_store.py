"""The content-addressed image store on a real folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from carsdepo_assets.images.store import ImageStore
from carsdepo_assets_tests.images.samples import jpeg


def test_put_stores_bytes_under_their_sha256(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    data = jpeg(1)
    sha = store.put(data, "jpg")
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path_for(sha) == tmp_path / "images" / sha[:2] / f"{sha}.jpg"
    assert store.path_for(sha).read_bytes() == data
    assert store.contains(sha)
    assert store.open(sha).mode == "RGB" and store.open(sha).size == (200, 150)


def test_putting_the_same_bytes_twice_keeps_one_untouched_file(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    sha = store.put(jpeg(2), "jpg")
    before = store.path_for(sha).stat().st_mtime_ns
    assert store.put(jpeg(2), "jpg") == sha
    assert store.path_for(sha).stat().st_mtime_ns == before
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == [f"{sha}.jpg"]


def test_missing_image_and_malformed_id_are_clear_errors(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    absent = "0" * 64
    assert not store.contains(absent)
    with pytest.raises(FileNotFoundError, match=f"image {absent} is not in the image store"):
        store.path_for(absent)
    with pytest.raises(ValueError, match="not a sha256 image id"):
        store.path_for("../../etc/passwd")
    with pytest.raises(ValueError, match="extension 'gif'"):
        store.put(b"GIF89a", "gif")


def test_first_batch_to_claim_an_image_owns_it(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    sha = hashlib.sha256(b"x").hexdigest()
    assert store.owner(sha) is None
    assert store.claim(sha, "b1") == "b1"
    assert store.claim(sha, "b2") == "b1"
    assert store.owner(sha) == "b1"
    assert not list(tmp_path.rglob("*.tmp"))
