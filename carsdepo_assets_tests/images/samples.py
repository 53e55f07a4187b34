"""Real image files for the ingestion tests, made with Pillow (and a hand-made PNG header)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (200, 150)


def photo(seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Image.Image:
    """A gradient with noise: every seed gives different pixels, so a different sha256."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(40, 200, width, dtype=np.float64)[None, :, None]
    pixels = ramp + rng.normal(0, 12, (height, width, 3)) + rng.integers(0, 40, 3)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).convert(mode)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, **options) -> bytes:
    return encode(photo(seed), "JPEG", quality=90, **options)


def exif_rotated_jpeg(seed: int, orientation: int = 6) -> bytes:
    """A landscape JPEG whose EXIF says "rotate 90° clockwise to view" (orientation 6)."""
    image = photo(seed)
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def palette_png_with_transparency(seed: int) -> bytes:
    """A palette PNG whose colour index 0 is transparent; the top-left quarter uses it."""
    quantized = photo(seed).quantize(16)
    indices = np.array(quantized)
    indices[indices == 0] = 1
    indices[: SIZE[1] // 2, : SIZE[0] // 2] = 0
    paletted = Image.fromarray(indices)
    paletted.putpalette(quantized.getpalette())
    return encode(paletted, "PNG", transparency=0)


def declared_size_png(width: int, height: int) -> bytes:
    """A PNG header declaring any size, with a few bytes of pixel data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def truncated_jpeg(seed: int) -> bytes:
    data = jpeg(seed)
    return data[: len(data) // 2]


def bad_files() -> dict[str, tuple[bytes, str]]:
    """file name -> (content, the prefix its quarantine reason must start with)."""
    return {
        "empty.jpg": (b"", "zero bytes"),
        "truncated.jpg": (truncated_jpeg(1), "truncated"),
        "notes.jpg": (b"this is a text file, not a photo\n" * 4, "not an image"),
        "corrupt-header.png": (encode(photo(2), "PNG")[:8] + b"garbage" * 8, "corrupt header"),
        "animation.gif": (encode(photo(3), "GIF"), "unsupported format GIF"),
        "scan.bmp": (encode(photo(4), "BMP"), "unsupported format BMP"),
        "scan.tiff": (encode(photo(5), "TIFF"), "unsupported format TIFF"),
        "icon.png": (encode(photo(6, size=(10, 10)), "PNG"), "too small"),
        "panorama.png": (encode(Image.new("L", (9000, 100)), "PNG"), "too large"),
        "bomb.png": (declared_size_png(100_000, 100_000), "decompression bomb"),
        "big-bomb.png": (declared_size_png(9000, 9000), "decompression bomb"),
    }


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
