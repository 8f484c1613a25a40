"""Tiny datasets and configs for the training tests (real files, real cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from polychrome.data.cache import PackedDataset

DOMAINS = ("ink", "neon")


def make_packed(n: int = 32, resolution: int = 16, domains: tuple[str, ...] = DOMAINS,
                seed: int = 0) -> PackedDataset:
    """An in-memory PackedDataset of procedural images: per-style colour + random blobs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(domains)
    base = torch.tensor([[40, 40, 200], [220, 60, 40], [30, 180, 30]])[labels % 3]
    noise = torch.randint(0, 50, (n, 3, resolution, resolution), generator=g)
    images = (base[:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
    files = [f"images/{domains[int(y)]}/img-{i // len(domains):04d}.png"
             for i, y in enumerate(labels)]
    return PackedDataset(images=images, labels=labels.to(torch.int64), domains=list(domains),
                         files=files, resolution=resolution)


def make_dataset_dir(home: Path, name: str = "toy", *, per_domain: int = 12, size: int = 20,
                     domains: tuple[str, ...] = DOMAINS, seed: int = 0) -> Path:
    """$HOME/datasets/<name>/1/ in the store's layout: images/<domain>/*.png + manifest.json."""
    root = Path(home) / "datasets" / name / "1"
    rng = np.random.default_rng(seed)
    entries = []
    for d_i, domain in enumerate(domains):
        (root / "images" / domain).mkdir(parents=True, exist_ok=True)
        for i in range(per_domain):
            arr = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            arr[..., d_i % 3] += 150
            rel = f"images/{domain}/img-{i:04d}.png"
            Image.fromarray(arr).save(root / rel)
            entries.append({"file": rel, "domain": domain, "source_name": rel, "sha256": "",
                            "phash": "", "width": size, "height": size})
    manifest = {"name": name, "version": 1, "created": "2024-01-01T00:00:00", "source": "test",
                "domains": {d: per_domain for d in domains}, "rejected": {}, "images": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def tiny_config(model: str = "dcgan", **kw):
    """A config for a few CPU steps in under a second or two."""
    from polychrome.training import TrainConfig

    model_config = {"width": 8} if model != "stylegan" else {
        "width": 8, "max_channels": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2}
    base = dict(model=model, model_config=model_config, dataset="toy", resolution=16, steps=6,
                batch_size=8, checkpoint_every=3, sample_every=3, log_every=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)
