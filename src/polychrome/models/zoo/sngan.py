"""SNGAN (Miyato et al. 2018): ResNet G with BN, ResNet D with spectral norm on every layer.

The style label enters G as an embedding concatenated to z and D through a
projection term. The class-conditional variant with conditional BN in G is
`cgan` (cgan.py), which reuses these networks.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..layers import ProjectionHead, ResBlock, conv2d
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
class ResNetConfig(NoiseConfig):
    """Shared by sngan and cgan."""

    z_dim: int = 128
    # Channels at full resolution, doubling per halving (32 px: 16/32/64/128): the
    # full-resolution 3x3 convs dominate CPU time, so this sets the speed.
    width: int = 16
    max_channels: int = 256
    d_extra_blocks: int = 1  # non-downsampling D blocks at 4x4

    def validate(self) -> None:
        super().validate()
        if self.max_channels < 1 or self.d_extra_blocks < 0:
            raise ModelError("max_channels must be >= 1 and d_extra_blocks >= 0",
                             code="bad_config")

    def ch(self, res: int) -> int:
        return channels_at(res, self.resolution, self.width, self.max_channels)

    def block_resolutions(self) -> list[int]:
        """Input sides of the G up-blocks: 4, 8, ..., R/2 (D runs them in reverse)."""
        out, r = [], 4
        while r < self.resolution:
            out.append(r)
            r *= 2
        return out


@dataclasses.dataclass
class SNGANConfig(ResNetConfig):
    label_dim: int = 32  # style embedding concatenated to z (num_domains > 1)

    def validate(self) -> None:
        super().validate()
        if self.label_dim < 1:
            raise ModelError("label_dim must be >= 1", code="bad_config")


def _xavier_linear(d_in: int, d_out: int) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class ResNetGenerator(nn.Module):
    """z -> linear -> (ch(4), 4, 4) -> up-blocks to R -> BN, ReLU, 3x3 conv, tanh.

    conditioning: "concat" (embedding concatenated to z, SNGAN) or "cbn"
    (conditional BatchNorm in every block, cGAN with projection D).
    """

    def __init__(self, cfg: ResNetConfig, conditioning: str = "concat"):
        super().__init__()
        self.cfg = cfg
        self.conditioning = conditioning
        conditional = cfg.num_domains > 1
        use_concat = conditional and conditioning == "concat"
        label_dim = getattr(cfg, "label_dim", 0)
        self.embed = nn.Embedding(cfg.num_domains, label_dim) if use_concat else None
        d_in = cfg.z_dim + (label_dim if use_concat else 0)
        self.fc = _xavier_linear(d_in, cfg.ch(4) * 16)
        norm = "cbn" if conditioning == "cbn" else "batch"
        self.blocks = nn.ModuleList(
            ResBlock(cfg.ch(r), cfg.ch(2 * r), resample="up", norm=norm,
                     num_classes=cfg.num_domains)
            for r in cfg.block_resolutions()
        )
        self.out_bn = nn.BatchNorm2d(cfg.ch(cfg.resolution))
        self.out_conv = conv2d(cfg.ch(cfg.resolution), cfg.channels, 3)

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, **_: object) -> torch.Tensor:
        # z: (B, z_dim); y: (B,) int64 or (B, num_domains) float soft labels
        # -> (B, C, R, R) float in [-1, 1]
        cfg = self.cfg
        z, y = generator_input(z, y, cfg, self.embed, truncation)
        if self.conditioning == "cbn" and y is None:  # one style: class 0 for every sample
            y = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        h = self.fc(z).view(-1, cfg.ch(4), 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class ResNetDiscriminator(nn.Module):
    """Down-blocks R -> 4x4, extra blocks at 4x4, ReLU, global sum pool, projection.

    Every layer is spectrally normalised. Down blocks keep their input width
    until the last conv, so the full-resolution convs stay narrow; the extra
    4x4 blocks (SNGAN's D also ends in non-downsampling blocks) add capacity
    where it is cheap.
    """

    def __init__(self, cfg: ResNetConfig, sn: bool = True):
        super().__init__()
        self.cfg = cfg
        res = cfg.block_resolutions()[::-1]  # R/2, ..., 4: output side of each down block
        blocks = [ResBlock(cfg.channels, cfg.ch(res[0]), resample="down", sn=sn, first=True)]
        blocks += [ResBlock(cfg.ch(r), cfg.ch(r // 2), resample="down", sn=sn) for r in res[:-1]]
        blocks += [ResBlock(cfg.ch(4), cfg.ch(4), sn=sn) for _ in range(cfg.d_extra_blocks)]
        self.blocks = nn.ModuleList(blocks)
        self.head = ProjectionHead(cfg.ch(4), cfg.num_domains, sn=sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        # x: (B, C, R, R) in [-1, 1] -> (B,) logits
        y = check_labels(y, self.cfg.num_domains, x.shape[0], x.device)
        h = x
        for block in self.blocks:
            h = block(h)
        h = F.relu(h).sum(dim=(2, 3))  # (B, ch(4)) global sum pooling
        return self.head(h, y)


@register_model("sngan")
class SNGAN(NoiseGAN):
    config_class = SNGANConfig
    # Hinge loss; TTUR (Heusel et al. 2017) with one D step per G step keeps it cheap on CPU.
    # Imported collections are small, so differentiable augmentation is on by default.
    train_defaults = train_defaults(loss="hinge", lr_g=1e-4, lr_d=4e-4, betas=[0.0, 0.9],
                                    n_critic=1, batch_size=64, diffaugment="color,translation",
                                    cpu_channels_last=True)

    def __init__(self, config: SNGANConfig):
        super().__init__(config)
        self.generator = ResNetGenerator(config, conditioning="concat")
        self.discriminator = ResNetDiscriminator(config, sn=True)
