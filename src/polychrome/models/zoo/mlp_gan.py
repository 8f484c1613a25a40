"""The original fully connected GAN (Goodfellow et al. 2014), optionally style-conditioned."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ...errors import ModelError
from ..layers import ProjectionHead
from ..registry import register_model
from .common import NoiseConfig, NoiseGAN, check_labels, generator_input, train_defaults


@dataclasses.dataclass
class MLPGANConfig(NoiseConfig):
    z_dim: int = 64
    width: int = 128  # first hidden layer of G; doubles per layer (D mirrors it)
    num_layers: int = 3  # hidden layers in G and in D
    label_dim: int = 32  # style embedding concatenated to z (num_domains > 1)
    dropout: float = 0.0  # dropout in D (the 2014 paper used it with maxout)
    # Not in the 2014 paper, but lets an MLP generator train reliably with Adam.
    g_batchnorm: bool = True
    g_activation: str = "relu"  # relu | lrelu

    def validate(self) -> None:
        super().validate()
        if self.num_layers < 1:
            raise ModelError("num_layers must be >= 1", code="bad_config")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError("dropout must be in [0, 1)", code="bad_config")
        if self.g_activation not in ("relu", "lrelu"):
            raise ModelError("g_activation must be relu or lrelu", code="bad_config")
        if self.label_dim < 1:
            raise ModelError("label_dim must be >= 1", code="bad_config")

    def hidden_sizes(self) -> list[int]:
        return [self.width * 2**i for i in range(self.num_layers)]


class MLPGenerator(nn.Module):
    def __init__(self, cfg: MLPGANConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.num_domains, cfg.label_dim) if cfg.num_domains > 1 else None
        layers: list[nn.Module] = []
        d_in = cfg.z_dim + (cfg.label_dim if self.embed is not None else 0)
        for h in cfg.hidden_sizes():
            layers.append(nn.Linear(d_in, h))
            if cfg.g_batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU() if cfg.g_activation == "relu" else nn.LeakyReLU(0.2))
            d_in = h
        layers += [nn.Linear(d_in, cfg.channels * cfg.resolution**2), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, **_: object) -> torch.Tensor:
        # z: (B, z_dim); y: (B,) int64 or (B, num_domains) float soft labels
        # -> (B, C, R, R) float in [-1, 1]
        cfg = self.cfg
        z, y = generator_input(z, y, cfg, self.embed, truncation)
        return self.net(z).view(-1, cfg.channels, cfg.resolution, cfg.resolution)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: MLPGANConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        d_in = cfg.channels * cfg.resolution**2
        for h in reversed(cfg.hidden_sizes()):
            layers += [nn.Linear(d_in, h), nn.LeakyReLU(0.2)]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            d_in = h
        self.net = nn.Sequential(*layers)
        self.head = ProjectionHead(d_in, cfg.num_domains)

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        # x: (B, C, R, R) in [-1, 1] -> (B,) logits
        y = check_labels(y, self.cfg.num_domains, x.shape[0], x.device)
        return self.head(self.net(x.flatten(1)), y)


@register_model("mlp-gan")
class MLPGAN(NoiseGAN):
    """Fully connected G and D; a baseline, best on small, simple images."""

    config_class = MLPGANConfig
    train_defaults = train_defaults(loss="ns", lr_g=2e-4, lr_d=2e-4, betas=[0.5, 0.999],
                                    batch_size=64)

    def __init__(self, config: MLPGANConfig):
        super().__init__(config)
        self.generator = MLPGenerator(config)
        self.discriminator = MLPDiscriminator(config)
