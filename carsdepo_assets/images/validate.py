"""Decode, validate and normalise one photo with Pillow.

Every rejection raises ``RejectedImage`` whose ``reason`` is a short sentence that starts with
a stable prefix (``zero bytes``, ``file too big``, ``not an image``, ``unsupported format``,
``corrupt header``, ``decompression bomb``, ``too small``, ``too large``, ``truncated``), so a
person reading a manifest, and a test, can tell the kinds apart.

The format is judged by the file's content, not its name: a PNG named ``.jpg`` is a PNG.
Phone JPEGs that Pillow reports as ``MPO`` (multi-picture JPEG) count as JPEG.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format name -> (name shown to people, file extension in the image store)
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("JPEG", "jpg"),
    "PNG": ("PNG", "png"),
    "WEBP": ("WebP", "webp"),
}
_FORMAT_ALIASES = {"MPO": "JPEG"}
EXIF_ORIENTATION = 0x0112
NORMALISED_FORMAT = "PNG"
# zlib level 3: about 3x faster than Pillow's default 6 on photos, and no bigger.
PNG_COMPRESS_LEVEL = 3


@dataclass(frozen=True)
class ImagePolicy:
    """What an acceptable photo is.

    ``max_pixels`` is the decompression-bomb guard: it is checked against the size declared in
    the file header, before any pixel is decoded. (Pillow itself refuses headers above twice
    ``Image.MAX_IMAGE_PIXELS``, about 179 MP, whatever this policy says.)
    """

    min_side: int = 64
    max_side: int = 8192
    max_pixels: int = 50_000_000
    max_file_bytes: int = 50 * 1024 * 1024
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(name.upper() for name in self.formats))
        unknown = [name for name in self.formats if name not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(
                f"ImagePolicy.formats must be a non-empty subset of {sorted(FORMATS)}, "
                f"got {list(self.formats)}"
            )
        if not 0 < self.min_side <= self.max_side:
            raise ValueError(
                f"ImagePolicy needs 0 < min_side <= max_side, got {self.min_side}, {self.max_side}"
            )
        if self.max_pixels <= 0 or self.max_file_bytes <= 0:
            raise ValueError("ImagePolicy.max_pixels and max_file_bytes must be positive")

    def accepted_names(self) -> str:
        return ", ".join(FORMATS[name][0] for name in self.formats)


class RejectedImage(Exception):
    """The file is not an acceptable photo; ``reason`` says why, ``size`` what it declared."""

    def __init__(self, reason: str, size: tuple[int, int] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class AcceptedImage:
    """A validated photo, upright and RGB, and the bytes that the image store keeps for it.

    ``data`` is the original file when it needed no change (same sha256 as the file, no
    re-encoding loss); otherwise the normalised image encoded as PNG, byte-for-byte the same
    for the same input (with the same Pillow and zlib builds). ``changes`` lists what
    normalisation did (empty when kept as is).
    """

    image: Image.Image
    data: bytes
    ext: str
    changes: tuple[str, ...]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def decode_image(data: bytes, policy: ImagePolicy) -> AcceptedImage:
    """Validate ``data`` against ``policy`` and return it normalised, or raise RejectedImage."""
    if not data:
        raise RejectedImage("zero bytes: the file is empty")
    if len(data) > policy.max_file_bytes:
        raise RejectedImage(file_too_big_reason(len(data), policy))
    image = _open_header(data)
    pillow_format = _FORMAT_ALIASES.get(image.format or "", image.format or "?")
    if pillow_format not in policy.formats:
        shown = FORMATS.get(pillow_format, (pillow_format,))[0]
        raise RejectedImage(
            f"unsupported format {shown}; accepted: {policy.accepted_names()}", image.size
        )
    _check_dimensions(image.size, policy)
    try:
        image.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... per decoder
        raise RejectedImage(
            f"truncated or corrupt image data: {error}", image.size
        ) from error
    return _normalise(image, data, pillow_format)


def file_too_big_reason(size_bytes: int | None, policy: ImagePolicy) -> str:
    """``size_bytes`` None: reading stopped at the limit, so the real size is unknown."""
    size = f"{size_bytes:,} bytes" if size_bytes is not None else "more than the limit"
    return f"file too big: {size}, limit {policy.max_file_bytes:,} bytes"


def _open_header(data: bytes) -> Image.Image:
    """Parse the header only (Pillow opens lazily); no pixel is decoded here."""
    try:
        with warnings.catch_warnings():
            # The policy's own pixel limit decides; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise RejectedImage(f"decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise RejectedImage(
            "not an image: Pillow cannot identify the file's format"
        ) from error
    except Exception as error:  # a known signature with a broken header
        raise RejectedImage(f"corrupt header: {error}") from error


def _check_dimensions(size: tuple[int, int], policy: ImagePolicy) -> None:
    width, height = size
    if width * height > policy.max_pixels:
        raise RejectedImage(
            f"decompression bomb: header declares {width}x{height} = {width * height:,} pixels, "
            f"limit {policy.max_pixels:,}",
            size,
        )
    if min(width, height) < policy.min_side:
        raise RejectedImage(
            f"too small: {width}x{height} px, the shorter side must be at least "
            f"{policy.min_side} px",
            size,
        )
    if max(width, height) > policy.max_side:
        raise RejectedImage(
            f"too large: {width}x{height} px, the longer side must be at most "
            f"{policy.max_side} px",
            size,
        )


def _normalise(image: Image.Image, data: bytes, pillow_format: str) -> AcceptedImage:
    changes: list[str] = []
    # An MPO is a JPEG followed by extra pictures every JPEG reader skips: kept as it is.
    if pillow_format != "JPEG" and getattr(image, "n_frames", 1) > 1:
        changes.append(f"first of {image.n_frames} frames")
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (0, 1):
        image = ImageOps.exif_transpose(image)
        changes.append(f"EXIF orientation {orientation} applied")
    if image.mode != "RGB":
        changes.append(f"{image.mode} converted to RGB")
        image = to_rgb(image)
    if not changes:
        return AcceptedImage(image, data, FORMATS[pillow_format][1], ())
    buffer = io.BytesIO()
    image.save(buffer, format=NORMALISED_FORMAT, compress_level=PNG_COMPRESS_LEVEL)
    return AcceptedImage(image, buffer.getvalue(), FORMATS[NORMALISED_FORMAT][1], tuple(changes))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: transparency is composited on white, 16-bit grey is scaled to 8 bits."""
    if image.mode.startswith("I"):  # 16-bit greyscale PNGs open as I;16 or I
        grey = np.asarray(image, dtype=np.uint32) >> 8
        return Image.fromarray(grey.clip(0, 255).astype(np.uint8)).convert("RGB")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
