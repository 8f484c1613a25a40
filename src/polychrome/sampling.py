"""Sampling helpers shared by the pipelines, the metrics and the server.

Below all three (it imports only models, imageio and errors), so metrics can sample a
model without importing the pipelines that themselves use the metrics' evaluator.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import ModelError, PolychromeError
from .imageio import from_tensor
from .models.base import GANModel

METADATA_KEYS = ("model", "version", "arch", "style", "seed", "truncation", "index",
                 "polychrome_version")


@dataclasses.dataclass
class GeneratedImage:
    array: np.ndarray  # (H, W, 3) uint8 RGB
    metadata: dict[str, str]  # METADATA_KEYS -> str; enough to regenerate the image


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


def load_model_on(model: GANModel | str, device: str | torch.device) -> GANModel:
    """A model object (moved to `device`, eval mode) or a store spec loaded onto it."""
    if isinstance(model, GANModel):
        return model.to(device).eval()
    from .persistence.models import load_model

    return load_model(str(model), device=str(device))


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
