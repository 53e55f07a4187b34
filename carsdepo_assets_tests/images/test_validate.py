"""Decoding and validation of single files, on real files made with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from carsdepo_assets.images.store import sha256_hex
from carsdepo_assets.images.validate import ImagePolicy, RejectedImage, decode_image
from carsdepo_assets_tests.images.samples import (
    bad_files,
    encode,
    exif_rotated_jpeg,
    jpeg,
    palette_png_with_transparency,
    photo,
)

BAD = bad_files()


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_file_kind_is_rejected_with_its_reason(name: str) -> None:
    data, expected_prefix = BAD[name]
    with pytest.raises(RejectedImage) as rejected:
        decode_image(data, ImagePolicy())
    assert rejected.value.reason.startswith(expected_prefix), rejected.value.reason


def test_unsupported_format_reason_names_the_format_and_the_accepted_ones() -> None:
    with pytest.raises(RejectedImage, match=r"^unsupported format GIF; accepted: JPEG, PNG, WebP$"):
        decode_image(BAD["animation.gif"][0], ImagePolicy())


def test_file_over_the_byte_limit_is_too_big() -> None:
    data = jpeg(1)
    with pytest.raises(RejectedImage, match=r"^file too big: .* limit 1,000 bytes"):
        decode_image(data, ImagePolicy(max_file_bytes=1000))


def test_a_format_left_out_of_the_policy_is_unsupported() -> None:
    with pytest.raises(RejectedImage, match="unsupported format WebP; accepted: JPEG, PNG"):
        decode_image(encode(photo(1), "WEBP"), ImagePolicy(formats=("JPEG", "PNG")))


def test_policy_refuses_formats_it_cannot_store() -> None:
    with pytest.raises(ValueError, match="GIF"):
        ImagePolicy(formats=("JPEG", "GIF"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_upright_rgb_files_are_kept_byte_for_byte(fmt: str) -> None:
    """Re-encoding a JPEG would lose quality and change its sha256 for nothing."""
    data = encode(photo(7), fmt)
    accepted = decode_image(data, ImagePolicy())
    assert accepted.data == data
    assert accepted.changes == ()
    assert accepted.ext == {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]


def test_png_named_like_a_jpeg_is_judged_by_its_content() -> None:
    accepted = decode_image(encode(photo(8), "PNG"), ImagePolicy())
    assert accepted.ext == "png"


def test_exif_rotated_jpeg_is_stored_upright() -> None:
    original = photo(9)
    accepted = decode_image(exif_rotated_jpeg(9, orientation=6), ImagePolicy())
    assert accepted.size == (original.height, original.width)
    # Orientation 6 means "rotate 90° clockwise": the left column becomes the top row.
    stored = Image.open(io.BytesIO(accepted.data))
    assert stored.format == "PNG" and stored.size == (150, 200)
    left_column = np.asarray(original, dtype=int)[:, 0].mean()
    top_row = np.asarray(stored, dtype=int)[0, :].mean()
    assert abs(top_row - left_column) < 8


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("CMYK", "JPEG"), ("L", "JPEG"), ("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"),
     ("I;16", "PNG"), ("RGBA", "WEBP")],
)
def test_other_modes_are_converted_to_rgb_png(mode: str, fmt: str) -> None:
    data = encode(_in_mode(mode), fmt)
    accepted = decode_image(data, ImagePolicy())
    assert accepted.image.mode == "RGB"
    assert accepted.ext == "png"
    assert Image.open(io.BytesIO(accepted.data)).mode == "RGB"
    assert any("converted to RGB" in change for change in accepted.changes)


def _in_mode(mode: str) -> Image.Image:
    """A photo in ``mode``; alpha modes get a real alpha ramp (encoders drop opaque alpha)."""
    if mode == "I;16":
        return _grey16()
    image = photo(10).convert(mode)
    if mode.endswith("A"):
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    return image


def _grey16() -> Image.Image:
    """A 16-bit grey ramp: the conversion must scale it, not clip everything to white."""
    ramp = np.tile(np.linspace(0, 65535, 200, dtype=np.uint16), (150, 1))
    return Image.fromarray(ramp)


def test_sixteen_bit_grey_keeps_its_range() -> None:
    accepted = decode_image(encode(_grey16(), "PNG"), ImagePolicy())
    row = np.asarray(accepted.image)[0, :, 0]
    assert row[0] < 5 and row[-1] > 250 and 100 < row[100] < 156


def test_transparent_pixels_become_white() -> None:
    accepted = decode_image(palette_png_with_transparency(11), ImagePolicy())
    assert accepted.image.getpixel((10, 10)) == (255, 255, 255)
    assert accepted.image.getpixel((150, 120)) != (255, 255, 255)


def test_normalisation_is_deterministic() -> None:
    """Same input, same stored bytes: the sha256 must not depend on when we ingest."""
    data = encode(photo(12).convert("CMYK"), "JPEG")
    first, second = decode_image(data, ImagePolicy()), decode_image(data, ImagePolicy())
    assert sha256_hex(first.data) == sha256_hex(second.data)


def test_multi_picture_phone_jpeg_is_kept_as_a_jpeg() -> None:
    data = encode(photo(13), "MPO", save_all=True, append_images=[photo(14)])
    accepted = decode_image(data, ImagePolicy())
    assert (accepted.ext, accepted.data) == ("jpg", data)


def test_animated_webp_keeps_its_first_frame() -> None:
    data = encode(photo(15), "WEBP", save_all=True, append_images=[photo(16)], lossless=True)
    accepted = decode_image(data, ImagePolicy())
    assert accepted.ext == "png" and accepted.changes == ("first of 2 frames",)
    assert accepted.image.tobytes() == photo(15).tobytes()
