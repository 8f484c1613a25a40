"""Tiny models and pictures shared by the style pipeline and CLI tests (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from polychrome.models import GANModel, create_model

STYLES = ["ink", "neon", "pastel"]

TINY = {
    "stargan": dict(resolution=16, num_domains=3, width=8, max_width=16, style_dim=8,
                    latent_dim=4, mapping_dim=16, mapping_shared_layers=2,
                    mapping_head_layers=2, e_width=8, e_max_width=16, d_width=8,
                    d_max_width=16),
    "cyclegan": dict(resolution=16, num_domains=2, width=8, n_blocks=1, d_width=8),
    "stylegan": dict(resolution=16, num_domains=3, width=8, max_channels=16, z_dim=16, w_dim=16,
                     mapping_layers=2),
    "dcgan": dict(resolution=16, num_domains=3, width=8),
}


def tiny(arch: str, *, num_domains: int | None = None, seed: int = 0) -> GANModel:
    torch.manual_seed(seed)
    cfg = dict(TINY[arch])
    if num_domains is not None:
        cfg["num_domains"] = num_domains
    model = create_model(arch, **cfg)
    k = model.config.num_domains
    model.meta["styles"] = STYLES[:k] if k > 1 else ["only"]
    return model.eval()


def save_tiny(arch: str, directory: Path, **kw) -> Path:
    """A model directory as the model store would export it (inference networks only)."""
    model = tiny(arch, **kw)
    model.save_pretrained(directory, modules=model.inference_modules, meta=dict(model.meta))
    return directory


def picture(seed: int, shape: tuple[int, int] = (24, 24)) -> np.ndarray:
    """A random (H, W, 3) uint8 picture (not at the model's resolution on purpose; square,
    so whole-picture models see all of it and tests can compare with a direct forward)."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def write_picture(path: Path, seed: int, shape: tuple[int, int] = (24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(seed, shape)).save(path)
    return path
