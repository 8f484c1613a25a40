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

import dataclasses
import inspect
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ModelError, PolychromeError
from ..imageio import encode_png, from_tensor
from ..models.base import GANModel
from ..utils.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

MAX_IMAGES = 10_000  # per request: a typo like --n 1000000 should fail fast, not fill a disk
METADATA_KEYS = ("model", "version", "arch", "style", "seed", "truncation", "index",
                 "polychrome_version")


@dataclasses.dataclass
class GeneratedImage:
    array: np.ndarray  # (H, W, 3) uint8 RGB
    metadata: dict[str, str]  # METADATA_KEYS -> str; enough to regenerate the image


# -- model helpers shared with the metrics (batched sampling) -------------------------------
def model_identity(model: GANModel) -> tuple[str, str]:
    """(spec, version) recorded in metadata: registry name + version, or the model dir path."""
    ref = getattr(model, "model_ref", None)
    if ref is None:
        return str(model.meta.get("name", model.name)), ""
    if ref.name is None:
        return str(ref.path), ""
    return ref.name, str(ref.version)


def check_noise_model(model: GANModel) -> None:
    if model.family != "noise":
        raise ModelError(f"model {model_identity(model)[0]!r} is a {model.family!r} model "
                         "(it transforms images); generation from noise needs a noise model",
                         code="wrong_family")


def generator_kwargs(model: GANModel, truncation: float) -> dict[str, Any]:
    """Keyword arguments for `model.generator`: deterministic noise, truncation if supported."""
    if not math.isfinite(truncation) or truncation < 0:
        raise PolychromeError(f"truncation must be a finite number >= 0, got {truncation}",
                              code="bad_request")
    params = inspect.signature(model.generator.forward).parameters
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw: dict[str, Any] = {}
    if "noise_mode" in params or open_kw:
        kw["noise_mode"] = "const"  # per-layer noise inputs from the global RNG would differ
    if truncation != 1.0:
        if "truncation" not in params and not open_kw:
            raise PolychromeError(f"model {model_identity(model)[0]!r} ({model.name}) does not "
                                  "support truncation; use --truncation 1", code="bad_request")
        kw["truncation"] = float(truncation)
    return kw


def style_index(model: GANModel, style: str | int | None) -> int | None:
    """A style name or index -> index into model.style_names (None stays None)."""
    if style is None:
        return None
    names = model.style_names
    if isinstance(style, str) and style in names:
        return names.index(style)
    if isinstance(style, int) or (isinstance(style, str) and (style.strip().isascii() and style.strip().isdigit())):
        idx = int(style)
        if 0 <= idx < len(names):
            return idx
    raise PolychromeError(f"unknown style {style!r}; valid styles: {', '.join(names)} "
                          f"(or an index 0..{len(names) - 1})", code="unknown_style")


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] with C in {1, 3, 4} -> (B, 3, H, W) in [-1, 1].

    Grey is repeated; alpha is composited on white, like the decoder does for inputs.
    """
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 4:
        a = (x[:, 3:4].clamp(-1, 1) + 1) / 2
        return x[:, :3] * a + (1 - a)
    return x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in [-1, 1] -> (B, 3, H, W) uint8 on the CPU (same rounding as PNGs)."""
    return torch.from_numpy(from_tensor(to_rgb(x))).permute(0, 3, 1, 2).contiguous()


def iter_samples(model: GANModel, n: int, *, seed: int = 0, labels: torch.Tensor | None = None,
                 truncation: float = 1.0, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
    """n samples in batches of uint8 (b, 3, R, R) on the CPU (for metrics, not regeneration).

    `labels` (n,) int64 style indices for a conditional model (None: unconditional model).
    Latents come from one CPU generator seeded with `seed`; the global RNG is untouched.
    The model is in eval mode meanwhile, then back in the mode it was in.
    """
    check_noise_model(model)
    kw = generator_kwargs(model, truncation)
    was_training = model.training
    z_all = model.sample_z(n, generator=torch.Generator().manual_seed(int(seed)), device="cpu")
    model.eval()
    try:
        for start in range(0, n, batch_size):
            z = z_all[start:start + batch_size].to(device)
            y = None if labels is None else labels[start:start + batch_size].to(device)
            with torch.inference_mode():
                batch = to_uint8(model.generator(z, y, **kw))
            yield batch
    finally:
        model.train(was_training)


# -- the pipeline ----------------------------------------------------------------------------
def _load(model: GANModel | str, device: str | torch.device) -> GANModel:
    if isinstance(model, GANModel):
        return model.to(device).eval()
    from ..models.store import load_model

    return load_model(str(model), device=str(device))


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


def generation_metadata(model: GANModel, *, seed: int, style: int | None, truncation: float,
                        index: int) -> dict[str, str]:
    """METADATA_KEYS of one generated image: enough to regenerate it bit for bit."""
    name, version = model_identity(model)
    names = model.style_names
    return {
        "model": name,
        "version": version,
        "arch": model.name,
        "style": names[style] if style is not None else (names[0] if names else ""),
        "seed": str(seed),
        "truncation": repr(float(truncation)),
        "index": str(index),
        "polychrome_version": __version__,
    }


def generate(model: GANModel | str, n: int, *, seed: int = 0, style: str | int | None = None,
             truncation: float = 1.0, device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
    """n images from a noise model (a loaded GANModel, a registry spec or a model dir path).

    `progress(done, total)` is called after each image (CLI progress bars, API jobs).
    """
    if not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise PolychromeError(f"n must be an integer in 1..{MAX_IMAGES}, got {n!r}",
                              code="bad_request")
    if not isinstance(seed, int) or seed < 0 or seed + n > 2**63 - 1:
        raise PolychromeError(f"seed must be an integer >= 0, got {seed!r}", code="bad_request")
    m = _load(model, device)
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
        model = _load(spec, device)
    else:
        model = _load(model, device)
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


def save_images(images: Iterable[GeneratedImage] | Sequence[GeneratedImage],
                out_dir: str | Path) -> list[Path]:
    """Write each image as a PNG with its metadata (tEXt chunks), atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for im in images:
        path = out_dir / image_filename(im.metadata)
        atomic_write_bytes(path, encode_png(im.array, im.metadata))
        paths.append(path)
    log.info("wrote %d images to %s", len(paths), out_dir)
    return paths
