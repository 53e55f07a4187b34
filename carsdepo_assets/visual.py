"""Pictures for run metadata and reports: boxes on images, contact sheets, histograms.

Every stage that shows images in the Dagster UI or in MLflow uses these helpers, so the same
damage class always has the same colour. Plain Pillow and matplotlib (Agg, no pyplot state),
no Dagster: the functions return images or PNG bytes, and ``markdown_image`` embeds PNG bytes in
markdown metadata as a data URI.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from carsdepo_assets.taxonomy import DENT, SCRATCH

Box = Sequence[float]  # x1, y1, x2, y2 in pixels of the image it is drawn on

LABEL_COLOURS: dict[str, tuple[int, int, int]] = {
    SCRATCH: (255, 64, 160),
    DENT: (0, 200, 255),
}
SHEET_BACKGROUND = (40, 40, 40)


def label_colour(label: str) -> tuple[int, int, int]:
    """The class's fixed colour; any other label gets a stable colour derived from its name."""
    if label in LABEL_COLOURS:
        return LABEL_COLOURS[label]
    digest = hashlib.sha256(label.encode()).digest()
    return (64 + digest[0] % 192, 64 + digest[1] % 192, 64 + digest[2] % 192)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Box],
    labels: Sequence[str],
    scores: Sequence[float] | None = None,
) -> Image.Image:
    """A copy of ``image`` (RGB) with each ``x1, y1, x2, y2`` box outlined and captioned."""
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(
            f"draw_boxes needs one label (and score) per box: {len(boxes)} boxes, "
            f"{len(labels)} labels, {'no' if scores is None else len(scores)} scores"
        )
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 250))
    font = ImageFont.load_default(size=max(10, round(max(canvas.size) / 40)))
    for index, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = label_colour(label)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        caption = label if scores is None else f"{label} {scores[index]:.2f}"
        left, top, right, bottom = font.getbbox(caption)
        text_w, text_h = right - left, bottom - top
        text_y = y1 - text_h - 2 if y1 >= text_h + 2 else y2 + 1  # above the box, else below
        draw.rectangle((x1, text_y, x1 + text_w + 2, text_y + text_h + 2), fill=colour)
        draw.text((x1 + 1 - left, text_y + 1 - top), caption, fill=(0, 0, 0), font=font)
    return canvas


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int,
    thumb_size: int | tuple[int, int],
) -> Image.Image:
    """The images as thumbnails (aspect kept, centred in ``thumb_size`` cells) on a grid."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1:
        raise ValueError(f"contact_sheet needs at least one column, got {columns}")
    cell_w, cell_h = (thumb_size, thumb_size) if isinstance(thumb_size, int) else thumb_size
    gap = 4
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new(
        "RGB",
        (columns * cell_w + (columns + 1) * gap, rows * cell_h + (rows + 1) * gap),
        SHEET_BACKGROUND,
    )
    for index, image in enumerate(images):
        thumb = image.convert("RGB")
        thumb.thumbnail((cell_w, cell_h), Image.Resampling.LANCZOS)
        row, column = divmod(index, columns)
        left = gap + column * (cell_w + gap) + (cell_w - thumb.width) // 2
        top = gap + row * (cell_h + gap) + (cell_h - thumb.height) // 2
        sheet.paste(thumb, (left, top))
    return sheet


def png_bytes(fig_or_image: Figure | Image.Image, colors: int | None = None) -> bytes:
    """PNG encoding of a Pillow image or a matplotlib figure.

    ``colors`` quantizes an image to a palette first: photos shrink to about a third, which
    keeps pictures embedded in run metadata light.
    """
    buffer = io.BytesIO()
    if isinstance(fig_or_image, Image.Image):
        image = fig_or_image.convert("RGB").quantize(colors) if colors else fig_or_image
        image.save(buffer, format="PNG", optimize=True)
    elif isinstance(fig_or_image, Figure):
        fig_or_image.savefig(buffer, format="png", bbox_inches="tight")
    else:
        raise TypeError(f"png_bytes takes a PIL image or a matplotlib Figure, not {fig_or_image!r}")
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown showing the PNG inline (a data URI), for ``MetadataValue.md`` and reports."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"markdown_image expects PNG bytes for {alt!r}")
    encoded = base64.b64encode(png).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def histogram_png(
    values: Sequence[float] | Mapping[str, Sequence[float]],
    bins: int | Sequence[float],
    title: str,
    xlabel: str,
) -> bytes:
    """A histogram as PNG; a mapping draws one stacked series per key (e.g. per class)."""
    series = dict(values) if isinstance(values, Mapping) else {"": values}
    figure = Figure(figsize=(5, 3), dpi=100)
    axes = figure.subplots()
    present = {name: list(data) for name, data in series.items() if len(data)}
    if present:
        axes.hist(
            list(present.values()),
            bins=bins,
            stacked=True,
            label=list(present),
            color=[tuple(c / 255 for c in label_colour(name)) for name in present],
        )
        if set(present) != {""}:
            axes.legend()
    else:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    return png_bytes(figure)
