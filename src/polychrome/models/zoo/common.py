"""What every noise -> image model shares: config fields, label checks, latent sampling."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...errors import ModelError
from ..base import GANModel, ModelConfig
from ..layers import embed_labels

# Keys of `train_defaults` that the trainer reads (a contract with polychrome.training).
TRAIN_DEFAULT_KEYS = frozenset({
    "loss", "lr_g", "lr_d", "betas", "n_critic", "gp_weight", "r1_gamma", "r1_interval",
    "ema_decay", "batch_size", "mixing_prob", "diffaugment",
})

# Keys of `train_defaults` about how the loop runs, not what it computes (optional):
# cpu_channels_last: NHWC images and conv weights on a CPU too (training/loop.py), where
# measured faster for the model.
EXECUTION_KEYS = frozenset({"cpu_channels_last"})

_BASE_TRAIN_DEFAULTS: dict[str, Any] = {
    "loss": "ns", "lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.999], "n_critic": 1,
    "gp_weight": 0.0, "r1_gamma": 0.0, "r1_interval": 1, "ema_decay": 0.999,
    "batch_size": 64, "mixing_prob": 0.0, "diffaugment": "",
}

NOISE_MODES = ("random", "const", "none")


def train_defaults(**overrides: Any) -> dict[str, Any]:
    """A complete train_defaults dict: the shared baseline plus a model's overrides."""
    unknown = set(overrides) - TRAIN_DEFAULT_KEYS - EXECUTION_KEYS
    if unknown:
        raise ValueError(f"unknown train_defaults keys: {sorted(unknown)}")
    return {**_BASE_TRAIN_DEFAULTS, **overrides}


@dataclasses.dataclass
class NoiseConfig(ModelConfig):
    """Shared by the noise -> image zoo: latent size and base width."""

    z_dim: int = 128  # latent size
    width: int = 64  # base channel count (channels at full resolution for conv nets)

    def validate(self) -> None:
        super().validate()
        for name in ("z_dim", "width"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be >= 1, got {getattr(self, name)}",
                                 code="bad_config")


def channels_at(res: int, resolution: int, width: int, max_channels: int) -> int:
    """Channel count at feature resolution `res`: doubles per halving, capped."""
    return max(1, min(width * (resolution // res), max_channels))


def check_labels(y: torch.Tensor | int | None, num_domains: int, batch: int,
                 device: torch.device, *, soft: bool = False) -> torch.Tensor | None:
    """Validate style labels; returns (B,) int64 on `device`, or None when unconditional.

    An int is broadcast to the batch. Unconditional models accept None or all-zero labels
    (a one-style dataset still has labels) and ignore them. With `soft` (generators), y
    may also be float weights over the styles, (B, num_domains) or (1, num_domains) for
    the whole batch: a blend of styles, returned as (B, num_domains) float on `device`
    and embedded by `layers.embed_labels`. Weights summing to 1 stay within the styles.
    """
    if y is None:
        if num_domains > 1:
            raise ModelError(f"this model is conditioned on {num_domains} styles; "
                             "pass a style label y", code="missing_label")
        return None
    y = torch.as_tensor(y, device=device)
    if soft and y.is_floating_point():
        return _check_soft_labels(y, num_domains, batch)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        what = "integers or (B, num_domains) float weights" if soft else "integers"
        raise ModelError(f"style labels must be {what}, got {y.dtype}", code="bad_label")
    y = y.long()
    if y.dim() == 0:
        y = y.expand(batch)
    if tuple(y.shape) != (batch,):
        raise ModelError(f"style labels must have shape ({batch},), got {tuple(y.shape)}",
                         code="bad_label")
    # Value checks read the data; an ONNX export traces shapes only (runtime/onnx_modules
    # checks the labels before the exported graph runs).
    if not torch.compiler.is_exporting() and bool(((y < 0) | (y >= num_domains)).any()):
        raise ModelError(f"style label out of range: this model has {num_domains} style(s) "
                         f"(labels 0..{num_domains - 1})", code="bad_label")
    return y if num_domains > 1 else None


def _check_soft_labels(y: torch.Tensor, num_domains: int, batch: int) -> torch.Tensor | None:
    # y: (B or 1, num_domains) float weights -> (B, num_domains), or None when unconditional
    if y.dim() != 2 or y.shape[1] != num_domains or y.shape[0] not in (1, batch):
        raise ModelError(f"soft style labels must have shape ({batch}, {num_domains}), got "
                         f"{tuple(y.shape)}", code="bad_label")
    if not bool(torch.isfinite(y).all()):
        raise ModelError("soft style labels must be finite", code="bad_label")
    return y.expand(batch, -1) if num_domains > 1 else None


def check_latent(z: torch.Tensor, z_dim: int) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != z_dim:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ModelError(f"latent z must have shape (B, {z_dim}), got {shape}", code="bad_latent")


def check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ModelError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, "
                         f"got {noise_mode!r}", code="bad_config")


def prepare_latent(z: torch.Tensor, z_dim: int, truncation: float) -> torch.Tensor:
    """Check z and apply the z-space truncation trick used by the non-style models.

    Scaling z toward the prior's mode (z = 0) trades diversity for fidelity like
    StyleGAN's w-space truncation; psi = 1 is a no-op, psi = 0 gives the 'mean' image.
    """
    check_latent(z, z_dim)
    return z if truncation == 1.0 else z * truncation


def generator_input(z: torch.Tensor, y: torch.Tensor | int | None, cfg: NoiseConfig,
                    embed: nn.Module | None, truncation: float,
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(input, labels) of a z-conditioned generator: z checked and truncated, y checked
    (hard (B,) or soft (B, num_domains) labels), and the label embedding appended to z
    when the model embeds labels (`embed` not None)."""
    z = prepare_latent(z, cfg.z_dim, truncation)
    y = check_labels(y, cfg.num_domains, z.shape[0], z.device, soft=True)
    if embed is not None:
        z = torch.cat([z, embed_labels(embed, y)], dim=1)
    return z, y


class NoiseGAN(GANModel):
    """Base of the noise -> image zoo: G(z, y) -> image, D(x, y) -> (B,) logits."""

    family = "noise"
    config: NoiseConfig

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def sample_z(self, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """(n, z_dim) standard normal drawn from `generator` (on its own device, so a
        CPU generator + seed gives the same z whatever the target device)."""
        src = generator.device if generator is not None else (device or self.device)
        z = torch.randn(n, self.config.z_dim, generator=generator, device=src)
        return z.to(device or self.device)

    def sample_y(self, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor | None:
        """(n,) uniform style labels, or None for an unconditional model."""
        if self.config.num_domains <= 1:
            return None
        src = generator.device if generator is not None else (device or self.device)
        y = torch.randint(0, self.config.num_domains, (n,), generator=generator, device=src)
        return y.to(device or self.device)
