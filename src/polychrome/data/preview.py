"""A labelled contact sheet of a dataset: one row per domain, the first images of each."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DatasetError
from ..imageio import decode_image, encode_png
from ..utils.atomic import atomic_write_bytes
from .store import resolve_dataset

_PAD = 4
_BACKGROUND = (236, 236, 236)
_CELL_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_MAX_LABEL_PX = 160


def _fit(arr: np.ndarray, cell: int) -> Image.Image:
    """Scale (H, W, 3) uint8 to fit a cell x cell square, keeping the aspect ratio."""
    h, w = arr.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Enlarging tiny images with NEAREST keeps their pixels honest; shrinking antialiases.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return Image.fromarray(arr).resize(size, resample)


def _label(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text` shortened with '..' until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def preview_grid(name: str, version: int | None = None, per_domain: int = 8,
                 cell: int = 64) -> np.ndarray:
    """(H, W, 3) uint8 grid: a label column (domain and image count), then up to
    `per_domain` images of that domain in file order, each fitted into a cell."""
    if per_domain < 1 or cell < 8:
        raise DatasetError(f"per_domain must be >= 1 and cell >= 8 (got {per_domain}, {cell})",
                           code="bad_option")
    ref = resolve_dataset(name, version)
    counts: dict[str, int] = ref.manifest["domains"]
    files: dict[str, list[str]] = {d: [] for d in counts}
    for img in sorted(ref.manifest["images"], key=lambda e: e["file"]):
        picked = files.setdefault(img["domain"], [])
        if len(picked) < per_domain:
            picked.append(img["file"])
    domains = sorted(files)

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [f"{d} ({counts.get(d, len(files[d]))})" for d in domains]
    label_w = min(_MAX_LABEL_PX, max(int(probe.textlength(t, font=font)) for t in labels) + 2 * _PAD)
    width = label_w + per_domain * (cell + _PAD) + _PAD
    height = len(domains) * (cell + _PAD) + _PAD
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for row, (domain, text) in enumerate(zip(domains, labels, strict=True)):
        y = _PAD + row * (cell + _PAD)
        text = _label(draw, font, text, label_w - 2 * _PAD)
        try:
            _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
        except UnicodeEncodeError:  # a bitmap font only knows latin-1
            text = text.encode("ascii", "replace").decode()
            _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text((_PAD, y + (cell - (bottom - top)) // 2 - top), text, fill=_TEXT, font=font)
        for col, rel in enumerate(files[domain]):
            x = label_w + col * (cell + _PAD)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_CELL_BACKGROUND)
            thumb = _fit(decode_image(ref.path / rel), cell)
            canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    return np.asarray(canvas)  # (H, W, 3) uint8


def write_preview(name: str, version: int | None = None, per_domain: int = 8, cell: int = 64,
                  *, out: str | os.PathLike) -> Path:
    """Render `preview_grid` and write it as a PNG, atomically."""
    out = Path(out).expanduser()
    atomic_write_bytes(out, encode_png(preview_grid(name, version, per_domain, cell)))
    return out
