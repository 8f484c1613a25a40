"""Labelled contact sheets: one row per label, images fitted into square cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 4
BACKGROUND = (236, 236, 236)
CELL_BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MAX_LABEL_PX = 160


def fit_cell(arr: np.ndarray, cell: int) -> Image.Image:
    """Scale (H, W, 3) uint8 to fit a cell x cell square, keeping the aspect ratio."""
    h, w = arr.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Enlarging tiny images with NEAREST keeps their pixels honest; shrinking antialiases.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return Image.fromarray(arr[..., :3]).resize(size, resample)


def _shorten(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text` shortened with '..' until it fits `width` pixels (latin-1 for bitmap fonts)."""
    try:
        draw.textbbox((0, 0), text, font=font)
    except UnicodeEncodeError:  # a bitmap font only knows latin-1
        text = text.encode("ascii", "replace").decode()
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def labelled_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], cell: int = 64) -> np.ndarray:
    """(H, W, 3) uint8: for each (label, images) a row with the label, then the images."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = min(MAX_LABEL_PX, max([int(probe.textlength(
        _shorten(probe, font, t, MAX_LABEL_PX), font=font)) for t, _ in rows] or [0]) + 2 * PAD)
    cols = max([len(images) for _, images in rows] or [1])
    width = label_w + cols * (cell + PAD) + PAD
    height = len(rows) * (cell + PAD) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        y = PAD + r * (cell + PAD)
        text = _shorten(draw, font, label, label_w - 2 * PAD)
        _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text((PAD, y + (cell - (bottom - top)) // 2 - top), text, fill=TEXT, font=font)
        for c, arr in enumerate(images):
            x = label_w + c * (cell + PAD)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=CELL_BACKGROUND)
            thumb = fit_cell(arr, cell)
            canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    return np.asarray(canvas)  # (H, W, 3) uint8
