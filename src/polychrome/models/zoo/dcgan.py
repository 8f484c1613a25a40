"""DCGAN (Radford et al. 2015): transposed-conv G, strided-conv D, N(0, 0.02) init.

Depth follows the resolution: G grows 4x4 -> R by stride-2 transposed convs and
D mirrors it. The same two networks (with a different D normalisation) serve
WGAN-GP, see wgan_gp.py.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ...errors import ModelError
from ..layers import ProjectionHead, init_normal_, make_norm2d
from ..registry import register_model
from .common import (
    NoiseConfig,
    NoiseGAN,
    channels_at,
    check_labels,
    generator_input,
    train_defaults,
)


@dataclasses.dataclass
class DCGANConfig(NoiseConfig):
    z_dim: int = 100
    width: int = 64  # channels at R/2 (the paper's ngf / ndf); doubles per halving
    max_channels: int = 512
    label_dim: int = 32  # style embedding concatenated to z (num_domains > 1)

    def validate(self) -> None:
        super().validate()
        if self.max_channels < 1 or self.label_dim < 1:
            raise ModelError("max_channels and label_dim must be >= 1", code="bad_config")

    def feature_channels(self, res: int) -> int:
        """Channels of the feature map at side `res` (4 <= res <= R/2), in G and D."""
        return channels_at(res, self.resolution // 2, self.width, self.max_channels)

    def feature_resolutions(self) -> list[int]:
        """4, 8, ..., R/2."""
        out, r = [], 4
        while r <= self.resolution // 2:
            out.append(r)
            r *= 2
        return out


class DCGenerator(nn.Module):
    """z (+ style embedding) -> 4x4 by a 4x4 transposed conv, then x2 per layer to R."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.num_domains, cfg.label_dim) if cfg.num_domains > 1 else None
        d_in = cfg.z_dim + (cfg.label_dim if self.embed is not None else 0)
        res = cfg.feature_resolutions()
        ch = cfg.feature_channels
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(d_in, ch(4), 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch(4)), nn.ReLU(True),
        ]
        for r in res[:-1]:
            layers += [nn.ConvTranspose2d(ch(r), ch(2 * r), 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch(2 * r)), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch(res[-1]), cfg.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_normal_(self.net)

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, **_: object) -> torch.Tensor:
        # z: (B, z_dim); y: (B,) int64 or (B, num_domains) float soft labels
        # -> (B, C, R, R) float in [-1, 1]
        z, y = generator_input(z, y, self.cfg, self.embed, truncation)
        return self.net(z[:, :, None, None])


class DCDiscriminator(nn.Module):
    """Strided 4x4 convs R -> 4x4, LeakyReLU(0.2), no norm on the first layer.

    `norm`: "batch" (DCGAN), "layer" or "none" (a WGAN-GP critic must not use
    batch norm: the gradient penalty is per sample). The output is linear in the
    flattened 4x4 features plus a projection term for the style label.
    """

    def __init__(self, cfg: DCGANConfig, norm: str = "batch"):
        super().__init__()
        self.cfg = cfg
        res = cfg.feature_resolutions()[::-1]  # R/2, ..., 4
        ch = cfg.feature_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, ch(res[0]), 4, 2, 1),
                                   nn.LeakyReLU(0.2, True)]
        for r in res[:-1]:
            layers += [nn.Conv2d(ch(r), ch(r // 2), 4, 2, 1, bias=norm == "none"),
                       make_norm2d(norm, ch(r // 2)), nn.LeakyReLU(0.2, True)]
        self.net = nn.Sequential(*layers)
        init_normal_(self.net)
        # a linear map of the flattened 4x4 map == the paper's final 4x4 valid conv
        self.head = ProjectionHead(ch(4) * 16, cfg.num_domains)
        init_normal_(self.head)

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        # x: (B, C, R, R) in [-1, 1] -> (B,) logits / critic values
        y = check_labels(y, self.cfg.num_domains, x.shape[0], x.device)
        return self.head(self.net(x).flatten(1), y)


@register_model("dcgan")
class DCGAN(NoiseGAN):
    config_class = DCGANConfig
    train_defaults = train_defaults(loss="ns", lr_g=2e-4, lr_d=2e-4, betas=[0.5, 0.999],
                                    batch_size=64, cpu_channels_last=True)

    def __init__(self, config: DCGANConfig):
        super().__init__(config)
        self.generator = DCGenerator(config)
        self.discriminator = DCDiscriminator(config, norm="batch")
