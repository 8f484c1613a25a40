"""CycleGAN (Zhu et al. 2017): two ResNet generators and two PatchGAN discriminators.

  generator      G: A -> B     generator_ba   F: B -> A
  discriminator  D_B (real B vs G(a))   discriminator_a  D_A (real A vs F(b))

Generators follow the paper's ResNet design: c7s1-k, stride-2 downsampling, n residual
blocks, fractional-strided upsampling, c7s1-C with tanh; instance norm and reflection
padding. Discriminators are the 70x70 PatchGAN (C64-C128-C256-C512, 4x4 kernels), with
the number of stride-2 layers reduced at small resolutions so the patch map stays >= 2x2.
Domain index 0 is A, 1 is B.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import ModelError
from ..base import GANModel, ModelConfig
from ..layers import InstanceNorm2d
from ..registry import register_model


def patch_layers(resolution: int, d_layers: int) -> int:
    """Stride-2 layers of a PatchGAN at `resolution`: `d_layers`, or 0 = derive.

    3 stride-2 layers give the paper's 70x70 receptive field; fewer on tiny images so the
    two following stride-1 4x4 convs still leave a 2x2 patch map.
    """
    if d_layers:
        return d_layers
    return max(1, min(3, int(math.log2(resolution)) - 2))


def check_patches(model: str, resolution: int, d_layers: int) -> None:
    """Refuse a d_layers that leaves the PatchGAN no patches at `resolution`."""
    if (resolution >> patch_layers(resolution, d_layers)) < 3:
        raise ModelError(f"{model}: d_layers={d_layers} leaves no patches at resolution "
                         f"{resolution}", code="bad_config")


@dataclasses.dataclass
class CycleGANConfig(ModelConfig):
    resolution: int = 32
    num_domains: int = 2  # must be 2: A and B
    width: int = 16  # generator channels of the first layer (paper: 64)
    n_down: int = 2  # stride-2 steps in each generator (paper: 2)
    n_blocks: int = 6  # residual blocks (paper: 6 at 128 px, 9 at 256 px)
    d_width: int = 16  # discriminator channels of the first layer (paper: 64)
    d_layers: int = 0  # stride-2 layers in the PatchGAN; 0 = derive (3 from 32 px, paper)

    @property
    def patch_layers(self) -> int:
        return patch_layers(self.resolution, self.d_layers)

    def validate(self) -> None:
        super().validate()
        if self.num_domains != 2:
            raise ModelError(f"cyclegan translates between exactly 2 styles, got num_domains="
                             f"{self.num_domains}; use stargan for more", code="bad_config")
        for name in ("width", "n_down", "d_width"):
            if getattr(self, name) < 1:
                raise ModelError(f"cyclegan: {name} must be >= 1", code="bad_config")
        if self.n_blocks < 0 or self.d_layers < 0:
            raise ModelError("cyclegan: n_blocks and d_layers must be >= 0", code="bad_config")
        if self.resolution >> self.n_down < 2:
            raise ModelError(f"cyclegan: n_down={self.n_down} is too deep for resolution "
                             f"{self.resolution}", code="bad_config")
        check_patches("cyclegan", self.resolution, self.d_layers)


class _ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False),
            InstanceNorm2d(ch, affine=True), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False),
            InstanceNorm2d(ch, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """One direction of the translation: (B, C, R, R) in [-1, 1] -> same shape in [-1, 1]."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        w, c = cfg.width, cfg.channels
        # Bias-free convs before instance norm: the norm's own shift makes a bias redundant.
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c, w, 7, bias=False),
                                   InstanceNorm2d(w, affine=True), nn.ReLU()]
        for _ in range(cfg.n_down):
            layers += [nn.Conv2d(w, 2 * w, 3, 2, 1, bias=False),
                       InstanceNorm2d(2 * w, affine=True), nn.ReLU()]
            w *= 2
        layers += [_ResidualBlock(w) for _ in range(cfg.n_blocks)]
        for _ in range(cfg.n_down):
            layers += [nn.ConvTranspose2d(w, w // 2, 3, 2, 1, output_padding=1, bias=False),
                       InstanceNorm2d(w // 2, affine=True), nn.ReLU()]
            w //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, c, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, C, R, R) in [-1, 1] -> (B, 1, h, w) logits, one per overlapping patch.

    `in_channels` input channels (pix2pix's conditional D sees the condition and the image
    side by side), first layer `width` channels (paper: 64), `layers` stride-2 convs.
    """

    def __init__(self, in_channels: int, width: int, layers_down: int):
        super().__init__()
        w = width
        # C64 has no norm (paper); LeakyReLU 0.2 everywhere.
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w, 4, 2, 1), nn.LeakyReLU(0.2)]
        for _ in range(layers_down - 1):
            w_out = min(2 * w, 8 * width)
            layers += [nn.Conv2d(w, w_out, 4, 2, 1, bias=False),
                       InstanceNorm2d(w_out, affine=True), nn.LeakyReLU(0.2)]
            w = w_out
        w_out = min(2 * w, 8 * width)
        layers += [nn.Conv2d(w, w_out, 4, 1, 1, bias=False),
                   InstanceNorm2d(w_out, affine=True), nn.LeakyReLU(0.2),
                   nn.Conv2d(w_out, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over patches: (B, C, R, R) -> (B,) logits."""
        return self.net(x).mean(dim=(1, 2, 3))


def init_weights(m: nn.Module) -> None:
    # N(0, 0.02) weights, unit-centred norm scales (as in the paper's code base lineage).
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.InstanceNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@register_model("cyclegan")
class CycleGAN(GANModel):
    family: ClassVar[str] = "translation"
    config_class: ClassVar[type[ModelConfig]] = CycleGANConfig
    inference_modules: ClassVar[tuple[str, ...]] = ("generator", "generator_ba")
    train_defaults: ClassVar[dict[str, Any]] = {
        "loss": "lsgan",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": [0.5, 0.999],
        "r1_gamma": 0.0,
        "ema_decay": 0.0,  # the paper uses no EMA
        "batch_size": 4,  # paper: 1; 4 uses 2 CPU cores better
    }

    def __init__(self, config: CycleGANConfig):
        super().__init__(config)
        self.config: CycleGANConfig = config
        self.generator = ResnetGenerator(config)  # A -> B
        self.generator_ba = ResnetGenerator(config)  # B -> A
        d_args = (config.channels, config.d_width, config.patch_layers)
        self.discriminator = PatchDiscriminator(*d_args)  # judges domain B
        self.discriminator_a = PatchDiscriminator(*d_args)  # judges domain A
        self.apply(init_weights)

    def generator_to(self, target: int) -> ResnetGenerator:
        """The generator whose output is in domain `target` (1 = B: G, 0 = A: F)."""
        if target not in (0, 1):
            raise ModelError(f"cyclegan style must be 0 or 1, got {target}", code="bad_style")
        return self.generator if target == 1 else self.generator_ba

    def discriminator_for(self, domain: int) -> PatchDiscriminator:
        """The discriminator that judges images of `domain` (1 = D_B, 0 = D_A)."""
        if domain not in (0, 1):
            raise ModelError(f"cyclegan style must be 0 or 1, got {domain}", code="bad_style")
        return self.discriminator if domain == 1 else self.discriminator_a

    def translate(self, x: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
        """x (B, C, R, R) in [-1, 1] -> the same images in domain `target` (0 = A, 1 = B).

        `target` may be an int or a (B,) tensor holding one value (the two directions
        are separate networks, so a batch goes one way).
        """
        if isinstance(target, torch.Tensor):
            values = target.reshape(-1).unique()
            if values.numel() != 1:
                raise ModelError("cyclegan translates a batch in one direction: all targets "
                                 "must be equal", code="bad_style")
            target = int(values.item())
        return self.generator_to(int(target))(x)
