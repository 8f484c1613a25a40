"""A small procedural multi-style image set, embedded so demos and tests need no downloads.

Each sample is one random shape (circle, square, triangle, diamond) with a random
colour and placement; each *style* draws the same shape differently (flat fill,
outline, striped, soft shadow). File names are aligned across style folders, as
in the emoji set, so translation has ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STYLES = ("flat", "outline", "striped", "shadow")
SHAPES = ("circle", "square", "triangle", "diamond")


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(shape)


def _draw(style: str, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
          r: float, size: int) -> Image.Image:
    scale = 4  # draw large, downsample: cheap antialiasing
    s = size * scale
    img = Image.new("RGB", (s, s), (255, 255, 255))
    d = ImageDraw.Draw(img)
    cx, cy, r = cx * scale, cy * scale, r * scale
    width = max(2, int(s * 0.06))

    def outline_only(fill, line):
        if shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=line, width=width)
        else:
            d.polygon(_polygon(shape, cx, cy, r), fill=fill, outline=line, width=width)

    if style == "flat":
        outline_only(colour, colour)
    elif style == "outline":
        outline_only(None, (20, 20, 20))
    elif style == "striped":
        mask = Image.new("L", (s, s), 0)
        md = ImageDraw.Draw(mask)
        if shape == "circle":
            md.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        else:
            md.polygon(_polygon(shape, cx, cy, r), fill=255)
        stripes = Image.new("RGB", (s, s), (255, 255, 255))
        sd = ImageDraw.Draw(stripes)
        step = max(4, s // 8)
        for x in range(-s, 2 * s, step):
            sd.line([(x, 0), (x + s, s)], fill=colour, width=step // 2)
        img.paste(stripes, (0, 0), mask)
        outline_only(None, colour)
    elif style == "shadow":
        shadow = Image.new("L", (s, s), 0)
        sd = ImageDraw.Draw(shadow)
        off = s * 0.05
        if shape == "circle":
            sd.ellipse([cx - r + off, cy - r + off, cx + r + off, cy + r + off], fill=160)
        else:
            sd.polygon(_polygon(shape, cx + off, cy + off, r), fill=160)
        shadow = shadow.filter(ImageFilter.GaussianBlur(s * 0.03))
        img.paste((90, 90, 90), (0, 0), shadow)
        light = tuple(min(255, int(c * 0.6 + 255 * 0.4)) for c in colour)
        outline_only(light, colour)
    else:
        raise ValueError(f"unknown style {style!r}")
    return img.resize((size, size), Image.LANCZOS)


def make_shapes_dataset(out: str | Path, *, n: int = 64, size: int = 32,
                        styles: tuple[str, ...] = STYLES, seed: int = 0) -> Path:
    """Write out/<style>/shape-NNNN.png for n shapes in each style; returns `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = tuple(int(c) for c in rng.integers(30, 226, size=3))
        r = float(rng.uniform(0.22, 0.36)) * size
        cx = float(rng.uniform(r + 1, size - r - 1))
        cy = float(rng.uniform(r + 1, size - r - 1))
        specs.append((shape, colour, cx, cy, r))
    for style in styles:
        d = out / style
        d.mkdir(parents=True, exist_ok=True)
        for i, (shape, colour, cx, cy, r) in enumerate(specs):
            _draw(style, shape, colour, cx, cy, r, size).save(d / f"shape-{i:04d}.png")
    return out
