"""Noise -> image generation: the ONE pipeline behind the CLI, the REST API and the web page.

Reproducibility contract: image `i` of a request with seed `S` is generated from its
own seed `S + i` (latent drawn on the CPU from `torch.Generator().manual_seed(S + i)`),
alone, in a batch of one. A batched forward on CPU is not guaranteed to round
exactly like a single-image forward (different GEMM/conv kernels by batch size), so
per-image forwards are what make every image independent of `n` and of its
neighbours: `regenerate(image.metadata)` reproduces it bit for bit.

Style on a conditional model: an explicit `style` (name or index) applies to every
image; `style=None` gives image `i` the style `(S + i) % num_styles`, so a request
cycles through the styles and an image's style is still a function of its own seed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import PolychromeError
from ..imageio import encode_png, from_tensor
from ..models.base import GANModel
from ..sampling import (
    GeneratedImage,
    check_noise_model,
    generation_metadata,
    generator_kwargs,
    load_model_on,
    style_index,
    to_rgb,
)
from ..utils.atomic import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

MAX_IMAGES = 10_000  # per request: a typo like --n 1000000 should fail fast, not fill a disk


# -- the pipeline ----------------------------------------------------------------------------
def _one(model: GANModel, *, seed: int, style: int | None, truncation: float, index: int,
         kw: dict[str, Any], device: torch.device | str) -> GeneratedImage:
    g = torch.Generator().manual_seed(seed)
    z = model.sample_z(1, generator=g, device="cpu").to(device)  # (1, z_dim)
    conditional = model.config.num_domains > 1
    if conditional and style is None:
        style = seed % model.config.num_domains
    y = torch.tensor([style], dtype=torch.int64, device=device) if conditional else None
    x = model.generator(z, y, **kw)  # (1, C, R, R) in [-1, 1]
    array = from_tensor(to_rgb(x)[0])  # (R, R, 3) uint8
    return GeneratedImage(array=array, metadata=generation_metadata(
        model, seed=seed, style=style, truncation=truncation, index=index))


def generate(model: GANModel | str, n: int, *, seed: int = 0, style: str | int | None = None,
             truncation: float = 1.0, device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None,
             on_image: Callable[[GeneratedImage], None] | None = None
             ) -> list[GeneratedImage]:
    """n images from a noise model (a loaded GANModel, a registry spec or a model dir path).

    `progress(done, total)` is called after each image (CLI progress bars, API jobs);
    `on_image(image)` gets each image as soon as it is made (`save_while_generating`).
    """
    if not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise PolychromeError(f"n must be an integer in 1..{MAX_IMAGES}, got {n!r}",
                              code="bad_request")
    if not isinstance(seed, int) or seed < 0 or seed + n > 2**63 - 1:
        raise PolychromeError(f"seed must be an integer >= 0, got {seed!r}", code="bad_request")
    m = load_model_on(model, device)
    check_noise_model(m)
    kw = generator_kwargs(m, truncation)
    idx = style_index(m, style)
    if m.config.num_domains == 1:
        idx = None  # the only style; the model takes no label
    out = []
    with torch.inference_mode():
        for i in range(n):
            out.append(_one(m, seed=seed + i, style=idx, truncation=truncation, index=i, kw=kw,
                            device=device))
            if on_image is not None:
                on_image(out[-1])
            if progress is not None:
                progress(i + 1, n)
    return out


def regenerate(metadata: dict[str, str], *, model: GANModel | None = None,
               device: str | torch.device = "cpu") -> GeneratedImage:
    """The image described by `metadata` (from a GeneratedImage or a saved PNG), bit for bit."""
    missing = [k for k in ("model", "seed", "style", "truncation") if k not in metadata]
    if missing:
        raise PolychromeError(f"image metadata lacks {', '.join(missing)}: it was not made by "
                              "polychrome generate", code="bad_metadata")
    try:
        seed = int(metadata["seed"])
        truncation = float(metadata["truncation"])
        index = int(metadata.get("index", "0"))
    except ValueError as e:
        raise PolychromeError(f"bad image metadata: {e}", code="bad_metadata") from None
    if model is None:
        spec = metadata["model"]
        if metadata.get("version"):
            spec = f"{spec}:{metadata['version']}"
        model = load_model_on(spec, device)
    else:
        model = load_model_on(model, device)
    check_noise_model(model)
    kw = generator_kwargs(model, truncation)
    idx = style_index(model, metadata["style"]) if model.config.num_domains > 1 else None
    with torch.inference_mode():
        return _one(model, seed=seed, style=idx, truncation=truncation, index=index, kw=kw,
                    device=device)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def image_filename(meta: dict[str, str]) -> str:
    """A name that is a function of what defines the image, so re-saving is idempotent."""
    model = _slug(Path(meta.get("model", "model")).name)
    version = f"-v{meta['version']}" if meta.get("version") else ""
    trunc = "" if float(meta.get("truncation", "1.0")) == 1.0 else f"-t{meta['truncation']}"
    return f"{model}{version}-seed{meta.get('seed', '0')}-{_slug(meta.get('style', ''))}{trunc}.png"


def save_image(image: GeneratedImage, out_dir: str | Path) -> Path:
    """Write one image as a PNG with its metadata (tEXt chunks) into out_dir, atomically;
    the directory's fsync is the caller's (`fsync_dir`, once for many images)."""
    path = Path(out_dir) / image_filename(image.metadata)
    atomic_write_bytes(path, encode_png(image.array, image.metadata), sync_dir=False)
    return path


def save_images(images: Iterable[GeneratedImage] | Sequence[GeneratedImage],
                out_dir: str | Path) -> list[Path]:
    """Write each image as a PNG with its metadata (tEXt chunks), atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [save_image(im, out_dir) for im in images]
    fsync_dir(out_dir)  # the renames, once
    log.info("wrote %d images to %s", len(paths), out_dir)
    return paths


def save_while_generating(model: GANModel | str, n: int, out_dir: str | Path, *,
                          finish: Callable[[GeneratedImage], GeneratedImage] | None = None,
                          **kw: Any) -> tuple[list[GeneratedImage], list[Path]]:
    """`generate(model, n, **kw)` with each image written (`save_image`) by one background
    thread while the next one is sampled: the PNG encode and the file's fsync wait on the
    disk, not on the CPU that samples (the directory is synced once, at the end). `finish(image)` (e.g. an upscale)
    runs in that thread before the write. Returns the images as written, and their paths.
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(im: GeneratedImage) -> tuple[GeneratedImage, Path]:
        im = finish(im) if finish is not None else im
        return im, save_image(im, out_dir)

    with ThreadPoolExecutor(1, thread_name_prefix="png-writer") as pool:
        pending = []
        generate(model, n, on_image=lambda im: pending.append(pool.submit(write, im)), **kw)
        done = [f.result() for f in pending]  # the first failed write raises here
    fsync_dir(out_dir)  # the renames, once
    log.info("wrote %d images to %s", len(done), out_dir)
    return [im for im, _ in done], [p for _, p in done]
