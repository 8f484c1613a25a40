"""A small style-based GAN, written from Karras et al. 2019 (StyleGAN) and 2020 (StyleGAN2).

Generator = mapping network z (+ style label) -> w, then a synthesis network from a
learned 4x4 constant with modulated/demodulated 3x3 convs, per-layer noise with a
learned strength and skip toRGB outputs summed across resolutions. One w per
layer (`num_ws` of them) so pipelines can mix styles per layer. Discriminator =
residual net with minibatch-stddev and a projection term for the label.
Equalised learning rate everywhere (and lr_mul 0.01 in the mapping network).

Simplifications for CPU: bilinear resampling instead of FIR filters, and
unfused modulation (see layers.ModulatedConv2d). tanh on the output keeps the
zoo-wide contract of images in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..layers import (
    LRELU_GAIN,
    EqualConv2d,
    EqualLinear,
    MinibatchStdDev,
    ModulatedConv2d,
    NoiseInjection,
    ProjectionHead,
    downsample2x,
    embed_labels,
    normalize_2nd_moment,
    upsample2x,
)
from ..registry import register_model
from .common import (
    NoiseConfig,
    NoiseGAN,
    channels_at,
    check_labels,
    check_latent,
    check_noise_mode,
    train_defaults,
)


@dataclasses.dataclass
class StyleGANConfig(NoiseConfig):
    z_dim: int = 128
    w_dim: int = 128
    width: int = 16  # channels at full resolution (G and D); doubles per halving
    max_channels: int = 256
    mapping_layers: int = 4  # the paper uses 8; 4 is plenty at 32-64 px
    mapping_lr_mul: float = 0.01
    w_avg_beta: float = 0.995  # momentum of the tracked mean w (truncation trick)
    mbstd_group: int = 4

    def validate(self) -> None:
        super().validate()
        for name in ("w_dim", "max_channels", "mapping_layers", "mbstd_group"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be >= 1", code="bad_config")
        if not 0.0 < self.mapping_lr_mul <= 1.0 or not 0.0 <= self.w_avg_beta < 1.0:
            raise ModelError("mapping_lr_mul must be in (0, 1] and w_avg_beta in [0, 1)",
                             code="bad_config")

    def ch(self, res: int) -> int:
        return channels_at(res, self.resolution, self.width, self.max_channels)

    @property
    def num_ws(self) -> int:
        # one conv at 4x4, two per later resolution, plus the final toRGB
        return 2 * int(math.log2(self.resolution)) - 2


class MappingNetwork(nn.Module):
    """z (B, z_dim) (+ label) -> w (B, w_dim); tracks the mean w per style for truncation."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        nd = cfg.num_domains
        self.embed = EqualLinear(nd, cfg.w_dim) if nd > 1 else None
        d_in = cfg.z_dim + (cfg.w_dim if self.embed is not None else 0)
        self.layers = nn.ModuleList(
            EqualLinear(d_in if i == 0 else cfg.w_dim, cfg.w_dim, lr_mul=cfg.mapping_lr_mul,
                        activation="lrelu")
            for i in range(cfg.mapping_layers)
        )
        # Per style, so truncation pulls toward the mean of *that* style, not of all styles.
        self.register_buffer("w_avg", torch.zeros(nd, cfg.w_dim))

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, update_w_avg: bool | None = None) -> torch.Tensor:
        # z: (B, z_dim), y: (B,) int64 or (B, num_domains) float soft labels -> w: (B, w_dim)
        check_latent(z, self.cfg.z_dim)
        y = check_labels(y, self.cfg.num_domains, z.shape[0], z.device, soft=True)
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            e = embed_labels(self.embed, y)
            x = torch.cat([x, normalize_2nd_moment(e)], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg:
            self._update_w_avg(x.detach(), y)
        return x if truncation == 1.0 else self.truncate(x, y, truncation)

    def truncate(self, w: torch.Tensor, y: torch.Tensor | None, psi: float) -> torch.Tensor:
        """w_avg[y] + psi * (w - w_avg[y]): psi=1 no-op, psi=0 the style's mean image."""
        # w: (B, w_dim) or (B, num_ws, w_dim); y: (B,) int64, (B, nd) soft labels or None
        if y is None:
            avg = self.w_avg[0]
        elif y.is_floating_point():  # a blend of styles pulls toward the blend of their means
            avg = y.to(self.w_avg.dtype) @ self.w_avg
        else:
            avg = self.w_avg[y]
        avg = avg.to(w.dtype)
        if w.dim() == 3 and avg.dim() == 2:
            avg = avg.unsqueeze(1)
        return avg + psi * (w - avg)

    @torch.no_grad()
    def _update_w_avg(self, w: torch.Tensor, y: torch.Tensor | None) -> None:
        nd = self.cfg.num_domains
        if y is None:
            y = torch.zeros(w.shape[0], dtype=torch.long, device=w.device)
        # One-hot matmul instead of index_add_: deterministic on every device; a soft
        # label counts toward each style's mean with its weight.
        onehot = y if y.is_floating_point() else F.one_hot(y, nd)
        onehot = onehot.to(self.w_avg.dtype)  # (B, nd)
        counts = onehot.sum(dim=0)[:, None]  # (nd, 1)
        mean = (onehot.t() @ w.to(self.w_avg.dtype)) / counts.clamp(min=1)
        new = torch.lerp(mean, self.w_avg, self.cfg.w_avg_beta)
        self.w_avg.copy_(torch.where(counts > 0, new, self.w_avg))


class SynthesisLayer(nn.Module):
    """(optional 2x up) -> modulated 3x3 conv -> + noise -> + bias -> scaled leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Fixed noise for noise_mode="const": saved with the weights -> reproducible images.
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.up:
            x = upsample2x(x, "bilinear")
        x = self.conv(x, w)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device,
                                dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype) if noise_mode == "const" else None
        x = self.noise(x, noise) + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, C, R, R) in [-1, 1].

    Layout of ws: [conv@4, conv0@8, conv1@8, conv0@16, ...]; the toRGB of each
    resolution uses the w after its last conv (shared with the next conv0).
    """

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.num_ws
        self.const = nn.Parameter(torch.randn(cfg.ch(4), 4, 4))
        self.layers = nn.ModuleList([SynthesisLayer(cfg.ch(4), cfg.ch(4), cfg.w_dim, 4, False)])
        self.torgbs = nn.ModuleList([ToRGB(cfg.ch(4), cfg.channels, cfg.w_dim)])
        res = 8
        while res <= cfg.resolution:
            self.layers.append(SynthesisLayer(cfg.ch(res // 2), cfg.ch(res), cfg.w_dim, res, True))
            self.layers.append(SynthesisLayer(cfg.ch(res), cfg.ch(res), cfg.w_dim, res, False))
            self.torgbs.append(ToRGB(cfg.ch(res), cfg.channels, cfg.w_dim))
            res *= 2
        assert len(self.layers) + 1 == self.num_ws

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        check_noise_mode(noise_mode)
        if ws.dim() == 2:  # one w for every layer
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.cfg.w_dim):
            raise ModelError(f"ws must have shape (B, {self.num_ws}, {self.cfg.w_dim}), "
                             f"got {tuple(ws.shape)}", code="bad_latent")
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], noise_mode)
        img = self.torgbs[0](x, ws[:, 1])
        for k, torgb in enumerate(self.torgbs[1:]):
            i = 1 + 2 * k
            x = self.layers[i](x, ws[:, i], noise_mode)
            x = self.layers[i + 1](x, ws[:, i + 1], noise_mode)
            img = upsample2x(img, "bilinear") + torgb(x, ws[:, i + 2])
        return torch.tanh(img)


class StyleGenerator(nn.Module):
    """G(z, y) = synthesis(mapping(z, y) broadcast to num_ws layers), with style mixing."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.num_ws
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    def truncate(self, w: torch.Tensor, y: torch.Tensor | int | None, psi: float) -> torch.Tensor:
        """Truncation trick on w (B, w_dim) or ws (B, num_ws, w_dim) toward the style's mean w."""
        y = check_labels(y, self.cfg.num_domains, w.shape[0], w.device, soft=True)
        return self.mapping.truncate(w, y, psi)

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, noise_mode: str = "random",
                mixing_prob: float = 0.0) -> torch.Tensor:
        # z: (B, z_dim); y: (B,) int64 or (B, num_domains) float soft labels
        # -> (B, C, R, R) float in [-1, 1]
        check_noise_mode(noise_mode)
        w = self.mapping(z, y, truncation=truncation)
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        # Style mixing regularisation. The global RNGs (CPU for the coin and the cutoff,
        # z's device for the second latent) keep runs reproducible under the trainer's
        # RNG-state save/restore.
        if self.training and mixing_prob > 0 and self.num_ws > 1:
            if torch.rand(()).item() < mixing_prob:
                cutoff = int(torch.randint(1, self.num_ws, ()).item())
                w2 = self.mapping(torch.randn_like(z), y, truncation=truncation,
                                  update_w_avg=False)
                ws = torch.cat([ws[:, :cutoff],
                                w2.unsqueeze(1).expand(-1, self.num_ws - cutoff, -1)], dim=1)
        return self.synthesis(ws, noise_mode=noise_mode)


class DBlock(nn.Module):
    """Residual down block: 3x3 conv, 2x down, 3x3 conv; skip = 2x down + 1x1; sum / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu")
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(downsample2x(x))
        # downsample between the convs (not after): the second conv runs at 1/4 the cost
        x = self.conv1(downsample2x(self.conv0(x)))
        return (x + skip) * (1 / math.sqrt(2))


class StyleDiscriminator(nn.Module):
    """fromRGB -> residual down blocks to 4x4 -> minibatch-stddev -> conv, fc -> projection."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.from_rgb = EqualConv2d(cfg.channels, cfg.ch(cfg.resolution), 1, activation="lrelu")
        blocks, res = [], cfg.resolution
        while res > 4:
            blocks.append(DBlock(cfg.ch(res), cfg.ch(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = cfg.ch(4)
        self.mbstd = MinibatchStdDev(cfg.mbstd_group)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.head = ProjectionHead(c4, cfg.num_domains, equalized=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        # x: (B, C, R, R) in [-1, 1] -> (B,) logits
        y = check_labels(y, self.cfg.num_domains, x.shape[0], x.device)
        h = self.blocks(self.from_rgb(x))
        h = self.fc(self.conv(self.mbstd(h)).flatten(1))
        return self.head(h, y)


@register_model("stylegan")
class StyleGAN(NoiseGAN):
    config_class = StyleGANConfig
    # StyleGAN2 recipe scaled to 32 px: logistic NS loss, Adam(0.002, 0, 0.99), lazy R1
    # every 16 steps (gamma ~ 0.0002 R^2 / batch), style mixing 0.9, G EMA.
    train_defaults = train_defaults(loss="ns", lr_g=0.002, lr_d=0.002, betas=[0.0, 0.99],
                                    r1_gamma=0.01, r1_interval=16, ema_decay=0.999,
                                    batch_size=32, mixing_prob=0.9,
                                    diffaugment="color,translation", cpu_channels_last=True)

    def __init__(self, config: StyleGANConfig):
        super().__init__(config)
        self.generator = StyleGenerator(config)
        self.discriminator = StyleDiscriminator(config)
