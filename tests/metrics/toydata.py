"""Toy datasets for the metrics (and store) tests: styles told apart by colour, or by texture."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from polychrome.data.cache import PackedDataset
from polychrome.data.synthetic import make_shapes_dataset

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def toy_images(n_per_style: int, size: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Per style: a colour-tinted background with a random dark blob (unique images)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    yy, xx = np.mgrid[0:size, 0:size]
    for style, colour in COLOURS.items():
        imgs = []
        for _ in range(n_per_style):
            arr = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
            cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
            r = rng.uniform(size * 0.12, size * 0.3)
            arr[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] *= 0.3
            imgs.append(arr.astype(np.uint8))
        out[style] = imgs
    return out


def write_dataset(home: Path, name: str = "toy", *, n_per_style: int = 24, size: int = 16,
                  seed: int = 0) -> Path:
    """$HOME/datasets/<name>/1/ with images/<style>/<stem>.png + manifest.json."""
    root = home / "datasets" / name / "1"
    entries = []
    for style, imgs in toy_images(n_per_style, size, seed).items():
        (root / "images" / style).mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(imgs):
            rel = f"images/{style}/img-{i:04d}.png"
            Image.fromarray(arr).save(root / rel)
            entries.append({"file": rel, "domain": style, "source_name": rel, "sha256": "",
                            "phash": "", "width": size, "height": size})
    manifest = {"name": name, "version": 1, "created": "2024-01-01T00:00:00", "source": "test",
                "domains": {s: n_per_style for s in COLOURS}, "rejected": {},
                "images": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def toy_packed(n_per_style: int = 24, size: int = 16, seed: int = 0) -> PackedDataset:
    styles = sorted(COLOURS)
    imgs = toy_images(n_per_style, size, seed)
    images, labels, files = [], [], []
    for k, style in enumerate(styles):
        for i, arr in enumerate(imgs[style]):
            images.append(torch.from_numpy(arr).permute(2, 0, 1))
            labels.append(k)
            files.append(f"images/{style}/img-{i:04d}.png")
    return PackedDataset(images=torch.stack(images), labels=torch.tensor(labels),
                         domains=styles, files=files, resolution=size)


# -- shapes: styles that differ in texture (flat, outline, shadow, striped), same stems -----
def shapes_images(n: int, size: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The procedural shapes set (polychrome.data.synthetic), per style: n (H, W, 3) uint8.

    Unlike the colour-coded toy set, its styles differ in texture and line work, so a
    trained evaluator also sees blur and noise: one that can pass the instrument bar.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = make_shapes_dataset(Path(tmp) / "shapes", n=n, size=size, seed=seed)
        return {style.name: [np.array(Image.open(f).convert("RGB"))
                             for f in sorted(style.iterdir())]
                for style in sorted(root.iterdir())}


def write_shapes_dataset(home: Path, name: str = "shapes", *, n: int = 100, size: int = 16,
                         seed: int = 0) -> Path:
    """$HOME/datasets/<name>/1/ holding the shapes set (file names shared across styles)."""
    root = home / "datasets" / name / "1"
    entries = []
    images = shapes_images(n, size, seed)
    for style, imgs in images.items():
        (root / "images" / style).mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(imgs):
            rel = f"images/{style}/shape-{i:04d}.png"
            Image.fromarray(arr).save(root / rel)
            entries.append({"file": rel, "domain": style, "source_name": rel, "sha256": "",
                            "phash": "", "width": size, "height": size})
    manifest = {"name": name, "version": 1, "created": "2024-01-01T00:00:00", "source": "test",
                "domains": {s: n for s in images}, "rejected": {}, "images": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def shapes_packed(n: int = 100, size: int = 16, seed: int = 0) -> PackedDataset:
    """The same images as `write_shapes_dataset`, packed in memory."""
    images, labels, files = [], [], []
    by_style = shapes_images(n, size, seed)
    for k, (style, imgs) in enumerate(sorted(by_style.items())):
        for i, arr in enumerate(imgs):
            images.append(torch.from_numpy(arr).permute(2, 0, 1))
            labels.append(k)
            files.append(f"images/{style}/shape-{i:04d}.png")
    return PackedDataset(images=torch.stack(images), labels=torch.tensor(labels),
                         domains=sorted(by_style), files=files, resolution=size)
