"""Plot helpers other stages reuse: boxes, contact sheets, PNG and markdown embedding."""

from __future__ import annotations

import base64
import io

import pytest
from matplotlib.figure import Figure
from PIL import Image

from carsdepo_assets.taxonomy import DENT, SCRATCH
from carsdepo_assets.visual import (
    LABEL_COLOURS,
    contact_sheet,
    draw_boxes,
    histogram_png,
    markdown_image,
    png_bytes,
)


def test_boxes_are_outlined_in_their_class_colour_on_a_copy():
    original = Image.new("RGB", (200, 150), (128, 128, 128))
    drawn = draw_boxes(original, [(20, 40, 120, 140), (150, 10, 190, 60)], [SCRATCH, DENT],
                       scores=[0.91, 0.4])
    assert drawn.getpixel((70, 140)) == LABEL_COLOURS[SCRATCH]  # bottom edge of the first box
    assert drawn.getpixel((190, 35)) == LABEL_COLOURS[DENT]  # right edge of the second box
    assert drawn.getpixel((70, 90)) == (128, 128, 128)  # inside stays untouched
    assert original.getpixel((70, 140)) == (128, 128, 128)


def test_a_box_without_a_label_is_refused():
    with pytest.raises(ValueError, match="one label"):
        draw_boxes(Image.new("RGB", (10, 10)), [(1, 1, 5, 5)], [])


def test_contact_sheet_places_thumbnails_on_a_grid():
    images = [Image.new("RGB", (300, 200), (n * 40, 0, 0)) for n in range(5)]
    sheet = contact_sheet(images, columns=3, thumb_size=100)
    assert sheet.size == (3 * 100 + 4 * 4, 2 * 100 + 3 * 4)
    assert sheet.getpixel((4 + 50, 4 + 50)) == (0, 0, 0)
    assert sheet.getpixel((4 + 104 + 50, 4 + 50)) == (40, 0, 0)


def test_png_of_an_image_and_of_a_figure_decode():
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    for png in (png_bytes(Image.new("RGB", (30, 20))), png_bytes(figure)):
        assert Image.open(io.BytesIO(png)).format == "PNG"


def test_a_photo_quantized_to_a_palette_keeps_its_size_in_fewer_bytes():
    photo = Image.effect_noise((120, 80), 60).convert("RGB")
    full, palette = png_bytes(photo), png_bytes(photo, colors=64)
    assert Image.open(io.BytesIO(palette)).mode == "P"
    assert Image.open(io.BytesIO(palette)).size == photo.size
    assert len(palette) < len(full)


def test_markdown_image_embeds_the_png_as_a_data_uri():
    png = png_bytes(Image.new("RGB", (8, 8), (1, 2, 3)))
    markdown = markdown_image(png, "sample")
    assert markdown.startswith("![sample](data:image/png;base64,")
    assert base64.b64decode(markdown.split(",", 1)[1].rstrip(")")) == png
    with pytest.raises(ValueError, match="PNG"):
        markdown_image(b"GIF89a", "not a png")


@pytest.mark.parametrize("values", [[0.1, 0.2, 0.2, 0.9], {SCRATCH: [0.05, 0.1], DENT: []}, []])
def test_histogram_is_a_png_for_one_series_per_class_series_or_none(values):
    png = histogram_png(values, bins=10, title="sizes", xlabel="relative side")
    assert Image.open(io.BytesIO(png)).size[0] > 100
