"""A labelled contact sheet of a dataset: one row per domain, the first images of each."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..imageio import decode_image, encode_png
from ..persistence.datasets import resolve_dataset
from ..utils.atomic import atomic_write_bytes
from ..utils.grid import labelled_grid


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
        files.setdefault(img["domain"], []).append(img["file"])
    # Evenly spaced through each domain (in file order), not just its first few files.
    for d, fs in files.items():
        if len(fs) > per_domain:
            files[d] = [fs[round(i * (len(fs) - 1) / (per_domain - 1))] if per_domain > 1
                        else fs[0] for i in range(per_domain)]
    domains = sorted(files)

    labels = [f"{d} ({counts.get(d, len(files[d]))})" for d in domains]
    rows = [(label, [decode_image(ref.path / rel) for rel in files[d]])
            for d, label in zip(domains, labels, strict=True)]
    return labelled_grid(rows, cell)


def write_preview(name: str, version: int | None = None, per_domain: int = 8, cell: int = 64,
                  *, out: str | os.PathLike) -> Path:
    """Render `preview_grid` and write it as a PNG, atomically."""
    out = Path(out).expanduser()
    atomic_write_bytes(out, encode_png(preview_grid(name, version, per_domain, cell)))
    return out
