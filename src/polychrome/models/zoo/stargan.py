"""StarGAN v2 (Choi et al. 2020): one generator G(x, s) for many styles (domains).

Four networks, written from the paper:
  generator      G(x, s): pre-activation residual encoder (instance norm, average-pool
                 downsampling) -> style-free bottleneck | AdaIN bottleneck -> AdaIN residual
                 decoder (nearest upsampling) -> IN, LeakyReLU, 1x1 conv, tanh.
                 Split as `encode(x) -> content` and `decode(content, s)`, so the style
                 system can cache the content and switch styles cheaply.
  mapping        F(z, y) -> s: shared MLP + one MLP head per domain.
  style_encoder  E(x, y) -> s: residual conv trunk (no normalisation) + one linear head per domain.
  discriminator  D(x, y) -> (B,) logits: the same kind of trunk + one output per domain.

The paper's face-specific high-pass / mask branch is left out.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..base import GANModel, ModelConfig
from ..layers import InstanceNorm2d, ResBlock
from ..registry import register_model

_SLOPE = 0.2  # LeakyReLU slope used throughout the paper
_RGB_EDGE = 1.0 - 1.0 / 255  # |x| cap before atanh (rgb_skip): pixel values stay finite


def _log2(n: int) -> int:
    return int(math.log2(n))


def _widths(start: int, cap: int, n: int) -> list[int]:
    """Channel widths doubling per downsampling step, capped: n+1 entries."""
    out = [min(start, cap)]
    for _ in range(n):
        out.append(min(out[-1] * 2, cap))
    return out


@dataclasses.dataclass
class StarGANConfig(ModelConfig):
    resolution: int = 32
    num_domains: int = 2
    style_dim: int = 64  # size of a style code s
    latent_dim: int = 16  # size of z fed to the mapping network
    width: int = 32  # G channels at full resolution; doubles per downsampling
    max_width: int = 128
    n_down: int = 0  # G downsamplings; 0 = derive (16x16 bottleneck from 64 px, paper)
    # U-Net skips (not in the paper, default off): the encoder's features at the `skips`
    # coarsest resolutions above the bottleneck are added to the decoder's, so the
    # source's layout reaches the output directly while AdaIN still sets the style.
    skips: int = 0
    # Residual output (not in the paper, default off): out = tanh(to_rgb(h) + atanh(x)), so
    # G draws a change over its input. to_rgb's instance norm removes every feature map's
    # mean, so without it a generator cannot tell a flat white crop from a flat black one
    # and learns to keep colours only slowly; with it identity is the starting point.
    rgb_skip: bool = False
    enc_blocks: int = 2  # style-free bottleneck blocks (inside encode, cacheable)
    dec_blocks: int = 2  # AdaIN bottleneck blocks (inside decode)
    mapping_dim: int = 128  # hidden width of F
    mapping_shared_layers: int = 4  # Linear+ReLU layers shared by every domain
    mapping_head_layers: int = 4  # layers per domain head (the last one outputs s)
    e_width: int = 16  # style-encoder channels at full resolution
    e_max_width: int = 128
    d_width: int = 16  # discriminator channels at full resolution
    d_max_width: int = 128

    @property
    def g_down(self) -> int:
        if self.n_down:
            return self.n_down
        # Paper: 256 px -> 4 downsamplings (16x16 bottleneck). Small images keep >= 2
        # but never go below a 4x4 bottleneck.
        return min(max(2, _log2(self.resolution) - 4), _log2(self.resolution) - 2)

    def validate(self) -> None:
        super().validate()
        positive = ("style_dim", "latent_dim", "width", "max_width", "mapping_dim",
                    "mapping_shared_layers", "mapping_head_layers", "e_width", "e_max_width",
                    "d_width", "d_max_width")
        for name in positive:
            if getattr(self, name) < 1:
                raise ModelError(f"stargan: {name} must be >= 1", code="bad_config")
        if not 0 <= self.skips <= self.g_down:
            raise ModelError(f"stargan: skips must be in 0..{self.g_down} (one per "
                             "downsampling)", code="bad_config")
        if self.enc_blocks < 0 or self.dec_blocks < 0:
            raise ModelError("stargan: enc_blocks and dec_blocks must be >= 0", code="bad_config")
        if self.n_down < 0 or self.resolution >> self.g_down < 2:
            raise ModelError(f"stargan: n_down={self.n_down} is too deep for "
                             f"resolution {self.resolution}", code="bad_config")

    @classmethod
    def paper(cls, resolution: int = 256, num_domains: int = 2, channels: int = 3,
              **overrides: Any) -> StarGANConfig:
        """The paper's networks (Choi et al. 2020, appendix), scaled to `resolution`.

        At 256 px the paper uses 64 channels at full resolution doubling to 512, style
        codes of 64, z of 16 and a 512-wide mapping network (4 shared + 4 per-domain
        layers); D and E use the same widths. Other resolutions keep the same channel
        count per feature-map size (width = 2**14 / R, capped at 512), so 64 px starts
        at 256 channels.
        """
        w = min(512, max(1, 2 ** 14 // resolution))
        cfg = cls(resolution=resolution, channels=channels, num_domains=num_domains,
                  style_dim=64, latent_dim=16, width=w, max_width=512, n_down=0,
                  enc_blocks=2, dec_blocks=2, mapping_dim=512, mapping_shared_layers=4,
                  mapping_head_layers=4, e_width=w, e_max_width=512, d_width=w,
                  d_max_width=512)
        return cls.from_dict({**cfg.to_dict(), **overrides})


# -- blocks ---------------------------------------------------------------------------
class DownBlock(nn.Module):
    """Pre-activation residual block halving the size (average pool); optional instance norm.

    Private rather than `layers.ResBlock` because the paper pools *between* the two
    convs (the second conv runs at half size, ~2x cheaper) and learns a shortcut only
    when the width changes.
    """

    def __init__(self, cin: int, cout: int, *, norm: bool):
        super().__init__()
        self.norm1 = InstanceNorm2d(cin, affine=True) if norm else nn.Identity()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.norm2 = InstanceNorm2d(cin, affine=True) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, cin, H, W) -> (B, cout, H/2, W/2)
        h = self.conv1(F.leaky_relu(self.norm1(x), _SLOPE))
        h = F.avg_pool2d(h, 2)  # pool between the convs: the second conv runs at half size
        h = self.conv2(F.leaky_relu(self.norm2(h), _SLOPE))
        sc = F.avg_pool2d(self.skip(x) if self.skip is not None else x, 2)
        return (h + sc) / math.sqrt(2)  # keeps unit variance through the sum


# -- networks -------------------------------------------------------------------------
class Content(NamedTuple):
    """G.encode(x): everything of the picture that does not depend on the style.

    features: the bottleneck (B, Cc, h, w); skips: the encoder features the decoder adds
    back at higher resolutions (empty unless the config has `skips`), coarsest first.
    """

    features: torch.Tensor
    skips: tuple[torch.Tensor, ...] = ()
    source: torch.Tensor | None = None  # the input x itself, for configs with rgb_skip


class StarGenerator(nn.Module):
    def __init__(self, cfg: StarGANConfig):
        super().__init__()
        ch = _widths(cfg.width, cfg.max_width, cfg.g_down)
        self.from_rgb = nn.Conv2d(cfg.channels, ch[0], 1)
        self.down = nn.ModuleList(DownBlock(ch[i], ch[i + 1], norm=True)
                                  for i in range(cfg.g_down))
        # Shared blocks (layers.ResBlock): pre-activation, LeakyReLU, sum / sqrt(2).
        self.enc_mid = nn.ModuleList(
            ResBlock(ch[-1], ch[-1], norm="instance", act="lrelu", rescale=True)
            for _ in range(cfg.enc_blocks))
        self.dec_mid = nn.ModuleList(
            ResBlock(ch[-1], ch[-1], norm="adain", act="lrelu", rescale=True,
                     style_dim=cfg.style_dim)
            for _ in range(cfg.dec_blocks))
        # AdaIN(s), LeakyReLU, nearest 2x up, conv, AdaIN(s), LeakyReLU, conv (+ shortcut).
        self.up = nn.ModuleList(
            ResBlock(ch[i + 1], ch[i], resample="up", norm="adain", act="lrelu", rescale=True,
                     style_dim=cfg.style_dim)
            for i in reversed(range(cfg.g_down)))
        self.to_rgb = nn.Sequential(InstanceNorm2d(ch[0], affine=True),
                                    nn.LeakyReLU(_SLOPE), nn.Conv2d(ch[0], cfg.channels, 1))
        self.content_channels = ch[-1]
        self.content_size = cfg.resolution >> cfg.g_down
        # Encoder levels (index into self.down) whose input feeds a skip, coarsest first.
        self.skip_levels = list(range(cfg.g_down - 1, cfg.g_down - 1 - cfg.skips, -1))
        self.rgb_skip = bool(cfg.rgb_skip)

    def encode(self, x: torch.Tensor) -> Content:
        # (B, C, R, R) in [-1, 1] -> Content: features (B, Cc, R / 2**n_down, R / 2**n_down)
        h = self.from_rgb(x)
        saved: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.down):
            if i in self.skip_levels:
                saved[i] = h  # (B, ch[i], R / 2**i, R / 2**i)
            h = blk(h)
        for blk in self.enc_mid:
            h = blk(h)
        return Content(h, tuple(saved[i] for i in self.skip_levels),
                       x if self.rgb_skip else None)

    def decode(self, content: Content, s: torch.Tensor) -> torch.Tensor:
        # content from encode (batch B), s (B, style_dim) -> (B, C, R, R) in [-1, 1]
        h = content.features
        for blk in self.dec_mid:
            h = blk(h, s)
        skips = iter(content.skips)
        for level, blk in zip(reversed(range(len(self.up))), self.up, strict=True):
            h = blk(h, s)  # (B, ch[level], R / 2**level, R / 2**level)
            if level in self.skip_levels:
                h = h + next(skips)
        # tanh rather than the paper's raw 1x1 output: every model in the zoo promises
        # [-1, 1] without a clamp that would kill gradients at the edges.
        out = self.to_rgb(h)
        if self.rgb_skip:  # a residual in tanh's input: G(x, s) = x where to_rgb gives 0
            out = out + torch.atanh(content.source.clamp(-_RGB_EDGE, _RGB_EDGE))
        return torch.tanh(out)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), s)


class MappingNetwork(nn.Module):
    def __init__(self, cfg: StarGANConfig):
        super().__init__()
        layers: list[nn.Module] = []
        d_in = cfg.latent_dim
        for _ in range(cfg.mapping_shared_layers):
            layers += [nn.Linear(d_in, cfg.mapping_dim), nn.ReLU()]
            d_in = cfg.mapping_dim
        self.shared = nn.Sequential(*layers)

        def head() -> nn.Sequential:
            hl: list[nn.Module] = []
            for _ in range(cfg.mapping_head_layers - 1):
                hl += [nn.Linear(cfg.mapping_dim, cfg.mapping_dim), nn.ReLU()]
            hl.append(nn.Linear(cfg.mapping_dim, cfg.style_dim))
            return nn.Sequential(*hl)

        self.heads = nn.ModuleList(head() for _ in range(cfg.num_domains))

    def forward_all(self, z: torch.Tensor) -> torch.Tensor:
        # z (B, latent_dim) -> one style per domain (B, K, style_dim)
        h = self.shared(z)
        return torch.stack([hd(h) for hd in self.heads], dim=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # z (B, latent_dim), y (B,) int64 domain -> s (B, style_dim)
        return _pick(self.forward_all(z), y)


def _pick(per_domain: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, K, ...) indexed by y (B,) -> (B, ...)."""
    return per_domain[torch.arange(per_domain.shape[0], device=per_domain.device), y]


def _trunk(channels: int, resolution: int, width: int, max_width: int) -> tuple[nn.Sequential, int]:
    """Conv trunk of D and E: residual blocks down to 4x4, then a 4x4 conv to 1x1."""
    n = _log2(resolution) - 2
    ch = _widths(width, max_width, n)
    layers: list[nn.Module] = [nn.Conv2d(channels, ch[0], 1)]
    layers += [DownBlock(ch[i], ch[i + 1], norm=False) for i in range(n)]
    layers += [nn.LeakyReLU(_SLOPE), nn.Conv2d(ch[-1], ch[-1], 4), nn.LeakyReLU(_SLOPE),
               nn.Flatten()]
    return nn.Sequential(*layers), ch[-1]


class StyleEncoder(nn.Module):
    def __init__(self, cfg: StarGANConfig):
        super().__init__()
        self.trunk, c = _trunk(cfg.channels, cfg.resolution, cfg.e_width, cfg.e_max_width)
        self.heads = nn.ModuleList(nn.Linear(c, cfg.style_dim) for _ in range(cfg.num_domains))

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, C, R, R) in [-1, 1] -> (B, K, style_dim)
        h = self.trunk(x)
        return torch.stack([hd(h) for hd in self.heads], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (B, C, R, R) in [-1, 1], y (B,) int64 -> s (B, style_dim)
        return _pick(self.forward_all(x), y)


class MultiTaskDiscriminator(nn.Module):
    def __init__(self, cfg: StarGANConfig):
        super().__init__()
        self.trunk, c = _trunk(cfg.channels, cfg.resolution, cfg.d_width, cfg.d_max_width)
        # One real/fake output per domain (a 1x1 conv on the 1x1 map in the paper).
        self.heads = nn.Linear(c, cfg.num_domains)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (B, C, R, R) in [-1, 1], y (B,) int64 -> (B,) logits of "real image of domain y"
        return _pick(self.heads(self.trunk(x)), y)


def _init_weights(m: nn.Module) -> None:
    # He initialisation with zero biases (paper, appendix).
    if isinstance(m, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(m.weight, a=0.0, nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# -- the model ------------------------------------------------------------------------
@register_model("stargan")
class StarGAN(GANModel):
    family: ClassVar[str] = "translation"
    config_class: ClassVar[type[ModelConfig]] = StarGANConfig
    inference_modules: ClassVar[tuple[str, ...]] = ("generator", "mapping", "style_encoder")
    train_defaults: ClassVar[dict[str, Any]] = {
        "loss": "ns",
        "lr_g": 1e-4,  # G and E
        "lr_d": 1e-4,
        "betas": [0.0, 0.99],
        "r1_gamma": 1.0,
        # Lazy R1 (StyleGAN2): every 16th D update, scaled by 16; the paper's every-step
        # penalty is r1_interval: 1.
        "r1_interval": 16,
        "ema_decay": 0.999,
        "batch_size": 8,
    }

    def __init__(self, config: StarGANConfig):
        super().__init__(config)
        self.config: StarGANConfig = config
        self.generator = StarGenerator(config)
        self.mapping = MappingNetwork(config)
        self.style_encoder = StyleEncoder(config)
        self.discriminator = MultiTaskDiscriminator(config)
        self.apply(_init_weights)
        if config.rgb_skip:  # start as the identity: the residual branch's last conv at 0
            nn.init.zeros_(self.generator.to_rgb[-1].weight)

    # -- conveniences for trainers and pipelines -----------------------------------
    def sample_z(self, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """(n, latent_dim) standard normal, drawn from `generator` (seeded = reproducible)."""
        dev = device if device is not None else next(self.parameters()).device
        if generator is not None and torch.device(dev).type != generator.device.type:
            z = torch.randn(n, self.config.latent_dim, generator=generator,
                            device=generator.device)
            return z.to(dev)
        return torch.randn(n, self.config.latent_dim, generator=generator, device=dev)

    def _labels(self, y: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        """Check a domain label (int or (n,) tensor) and return it as (n,) int64."""
        k = self.config.num_domains
        if isinstance(y, int):
            if not 0 <= y < k:
                raise ModelError(f"style {y} out of range: this model has {k} style(s)",
                                 code="bad_style")
            return torch.full((n,), y, dtype=torch.long, device=device)
        y = y.to(device=device, dtype=torch.long).reshape(-1)
        if y.numel() != n:
            raise ModelError(f"expected {n} style labels, got {y.numel()}", code="bad_style")
        if n and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ModelError(f"style label out of range: this model has {k} style(s)",
                             code="bad_style")
        return y

    def style_from_latent(self, z: torch.Tensor, y: int | torch.Tensor) -> torch.Tensor:
        """Latent-guided style: F(z, y) -> (B, style_dim)."""
        return self.mapping(z, self._labels(y, z.shape[0], z.device))

    def style_from_reference(self, ref: torch.Tensor, y: int | torch.Tensor) -> torch.Tensor:
        """Reference-guided style: E(ref, y) -> (B, style_dim); ref (B, C, R, R) in [-1, 1]."""
        return self.style_encoder(ref, self._labels(y, ref.shape[0], ref.device))

    def translate(self, x: torch.Tensor, target: int | torch.Tensor, *,
                  s: torch.Tensor | None = None, ref: torch.Tensor | None = None,
                  z: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Restyle x (B, C, R, R) in [-1, 1] into domain `target`.

        The style comes from `s` if given, else from a reference image `ref`, else from
        `z` (sampled from `generator` when missing).
        """
        if s is None:
            if ref is not None:
                s = self.style_from_reference(ref, target)
            else:
                if z is None:
                    z = self.sample_z(x.shape[0], generator=generator, device=x.device)
                s = self.style_from_latent(z, target)
        return self.generator(x, s)
