"""pix2pix (Isola et al. 2017): a U-Net generator and a conditional PatchGAN, for restoration.

One registered model, `pix2pix`, with a `task` in its config:

  sr        input: the picture made smaller by s (s in `scales`, e.g. [2, 4]); output: the
            picture at s times the size. The U-Net runs at the small size and ends in one
            sub-pixel head per scale (conv -> 3 s^2 channels -> pixel shuffle; Shi et al.
            2016), added to the bicubic enlargement, so an untrained net already gives
            bicubic and the network learns only what bicubic misses (several scales share
            the trunk, as in MDSR, Lim et al. 2017).
  inpaint   input: the picture with its holes filled by a pyramid (push-pull) fill, and the
            mask (1 = hole) as a fourth channel; output: the fill plus the network's
            correction inside the holes, and exactly the input outside them.
  colorize  input: the luma Y (BT.601); output: RGB whose luma is exactly Y (the network
            predicts Cb, Cr; colour.chroma_to_rgb shrinks them where they leave the cube).

Every task maps one prepared tensor to RGB: `generator(x_in, scale)`, (B, Cin, h, w) in
[-1, 1] -> (B, 3, h * s, w * s), fully convolutional for h, w multiples of 2^n_down, so
the tiling engine (pipelines/tiling.py) runs it on pictures of any size. `prepare(...)`
builds x_in from what a user has (a small picture, a picture and a mask, a grey picture).

U-Net (the paper's encoder-decoder with skips, sized for a CPU): 4x4 stride-2 convs down
(channels width * 2^i, capped at max_width), `n_blocks` residual blocks at the bottom,
nearest upsampling + 3x3 conv up with the encoder's features concatenated (computed as
one 2x2 conv per output phase: `layers.upsample_conv3x3`), and a full-resolution tail
that sees the input itself. Norm: instance norm (the paper's batch norm at
batch size 1) for inpaint and colorize, none for sr (EDSR found it hurts super-resolution).
The discriminator is the conditional PatchGAN: it sees the condition (the input, enlarged
to the output size for sr) beside the real or restored picture.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...colour import chroma_to_rgb, luma
from ...errors import ModelError
from ..base import GANModel, ModelConfig
from ..layers import InstanceNorm2d, upsample_conv3x3
from ..registry import register_model
from .cyclegan import PatchDiscriminator, check_patches, init_weights, patch_layers

TASKS = ("sr", "inpaint", "colorize")
TASK_NAMES = {"sr": "super-resolution", "inpaint": "inpainting", "colorize": "colorization"}
NORMS = ("auto", "instance", "none")
IN_CHANNELS = {"sr": 3, "inpaint": 4, "colorize": 1}


@dataclasses.dataclass
class Pix2PixConfig(ModelConfig):
    resolution: int = 64  # training crop side (the output side)
    task: str = "sr"  # sr | inpaint | colorize
    scales: list[int] = dataclasses.field(default_factory=list)  # sr factors; [] = [4] (sr), [1]
    width: int = 32  # channels of the first (half-resolution) encoder layer (paper: 64)
    max_width: int = 256  # channel cap (paper: 512)
    n_down: int = 3  # stride-2 encoder layers (paper: 8 at 256 px)
    n_blocks: int = 2  # residual blocks at the bottom of the U
    norm: str = "auto"  # auto (none for sr, instance otherwise) | instance | none
    d_width: int = 32  # discriminator channels of the first layer (paper: 64)
    d_layers: int = 0  # stride-2 layers in the PatchGAN; 0 = derive (3 from 32 px, paper)

    def __post_init__(self) -> None:
        if isinstance(self.scales, list) and not self.scales:
            self.scales = [4] if self.task == "sr" else [1]

    @property
    def norm_kind(self) -> str:
        if self.norm != "auto":
            return self.norm
        return "none" if self.task == "sr" else "instance"

    @property
    def input_resolution(self) -> int:
        """Side of the generator's input crop: the small picture for sr."""
        return self.resolution // max(self.scales) if self.task == "sr" else self.resolution

    @property
    def patch_layers(self) -> int:
        return patch_layers(self.resolution, self.d_layers)

    def validate(self) -> None:
        super().validate()
        if self.task not in TASKS:
            raise ModelError(f"pix2pix task must be one of {', '.join(TASKS)}, got "
                             f"{self.task!r}", code="bad_config")
        if self.norm not in NORMS:
            raise ModelError(f"pix2pix norm must be one of {', '.join(NORMS)}, got "
                             f"{self.norm!r}", code="bad_config")
        if self.channels != 3:
            raise ModelError("pix2pix restores RGB pictures: channels must be 3",
                             code="bad_config")
        scales = self.scales
        if (not isinstance(scales, list) or not scales
                or any(isinstance(s, bool) or not isinstance(s, int) for s in scales)):
            raise ModelError(f"pix2pix scales must be a list of integers, got {scales!r}",
                             code="bad_config")
        if self.task == "sr":
            bad = [s for s in scales if s not in (2, 3, 4, 8)]
            if bad or len(set(scales)) != len(scales):
                raise ModelError(f"pix2pix sr scales must be distinct values of 2, 3, 4, 8; "
                                 f"got {scales}", code="bad_config")
            if any(self.resolution % s for s in scales):
                raise ModelError(f"pix2pix: resolution {self.resolution} is not a multiple "
                                 f"of every scale {scales}", code="bad_config")
        elif scales != [1]:
            raise ModelError(f"pix2pix {self.task} does not change the size: scales must "
                             f"be [1], got {scales}", code="bad_config")
        for name in ("width", "max_width", "n_down", "d_width"):
            if getattr(self, name) < 1:
                raise ModelError(f"pix2pix: {name} must be >= 1", code="bad_config")
        if self.n_blocks < 0 or self.d_layers < 0:
            raise ModelError("pix2pix: n_blocks and d_layers must be >= 0", code="bad_config")
        if self.input_resolution >> self.n_down < 2:
            raise ModelError(f"pix2pix: n_down={self.n_down} is too deep for a "
                             f"{self.input_resolution} px input crop", code="bad_config")
        check_patches("pix2pix", self.resolution, self.d_layers)

    def task_scales(self) -> list[int]:
        return list(self.scales) if self.task == "sr" else [1]


def _norm(kind: str, ch: int) -> nn.Module:
    return InstanceNorm2d(ch, affine=True) if kind == "instance" else nn.Identity()


class _Block(nn.Module):
    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1), _norm(norm, ch), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, 1, 1), _norm(norm, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UNetGenerator(nn.Module):
    """(B, Cin, h, w) prepared input in [-1, 1] -> (B, 3, h * s, w * s) RGB in [-1, 1]."""

    def __init__(self, cfg: Pix2PixConfig):
        super().__init__()
        self.task = cfg.task
        norm = cfg.norm_kind
        cin = IN_CHANNELS[cfg.task]
        chans = [min(cfg.width * 2 ** i, cfg.max_width) for i in range(cfg.n_down)]
        self.down = nn.ModuleList()
        prev = cin
        for i, c in enumerate(chans):  # the outermost layer has no norm (paper)
            self.down.append(nn.Sequential(
                nn.Conv2d(prev, c, 4, 2, 1), nn.Identity() if i == 0 else _norm(norm, c),
                nn.LeakyReLU(0.2)))
            prev = c
        self.middle = nn.Sequential(*[_Block(prev, norm) for _ in range(cfg.n_blocks)])
        self.up = nn.ModuleList()
        for i in reversed(range(1, cfg.n_down)):  # chans[i] (+ skip chans[i-1]) -> chans[i-1]
            self.up.append(nn.Sequential(
                nn.Conv2d(chans[i] + (chans[i] if i < cfg.n_down - 1 else 0), chans[i - 1],
                          3, 1, 1),
                _norm(norm, chans[i - 1]), nn.ReLU()))
        top = chans[0]
        skip0 = top if cfg.n_down > 1 else 0
        # Full resolution: the upsampled features beside the input itself.
        self.tail = nn.Sequential(nn.Conv2d(top + skip0 + cin, top, 3, 1, 1), nn.ReLU())
        outs = {"sr": None, "inpaint": 3, "colorize": 2}[cfg.task]
        if cfg.task == "sr":
            self.heads = nn.ModuleDict({str(s): nn.Conv2d(top, 3 * s * s, 3, 1, 1)
                                        for s in cfg.scales})
        else:
            self.heads = nn.ModuleDict({"1": nn.Conv2d(top, outs, 3, 1, 1)})
        self.scales = cfg.task_scales()

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        s = self._scale(scale)
        feats = []
        h = x
        for layer in self.down:
            h = layer(h)
            feats.append(h)
        h = self.middle(h)
        # Every "nearest 2x upsample, then 3x3 conv" runs as upsample_conv3x3: the same
        # function (to float rounding) at 4 instead of 9 multiply-adds per output pixel.
        for k, layer in enumerate(self.up):  # deepest first
            if k > 0:
                h = torch.cat([h, feats[-1 - k]], dim=1)
            conv = layer[0]
            h = layer[1:](upsample_conv3x3(h, conv.weight, conv.bias))
        if len(self.down) > 1:
            h = torch.cat([h, feats[0]], dim=1)
        # The tail's conv sees [upsampled features, the input]: split by input channels.
        conv, c = self.tail[0], h.shape[1]
        h = (upsample_conv3x3(h, conv.weight[:, :c], conv.bias)
             + F.conv2d(x, conv.weight[:, c:].to(x.dtype), padding=1))
        h = self.tail[1:](h)
        out = self.heads[str(s)](h)
        return self._finish(out, x, s)

    def _scale(self, scale: int | None) -> int:
        if scale is None:
            return self.scales[-1] if self.task == "sr" else 1
        if int(scale) not in self.scales:
            raise ModelError(f"this model is trained for scale(s) "
                             f"{', '.join(f'x{s}' for s in self.scales)}, not x{scale}",
                             code="bad_scale")
        return int(scale)

    def _finish(self, out: torch.Tensor, x: torch.Tensor, s: int) -> torch.Tensor:
        # out: the head's output; x: the prepared input. Returns RGB in [-1, 1] (sr: may
        # overshoot slightly during training; pipelines clamp).
        if self.task == "sr":
            base = F.interpolate(x, scale_factor=float(s), mode="bicubic", align_corners=False)
            return base + F.pixel_shuffle(out, s)
        if self.task == "inpaint":
            filled, mask = x[:, :3], x[:, 3:4]
            return filled + mask * out  # outside the holes: exactly the input
        # colorize: Cb, Cr in [-0.5, 0.5] from tanh; RGB with the input's luma
        y01 = (x[:, :1] + 1) / 2
        rgb01 = chroma_to_rgb(y01.float(), 0.5 * torch.tanh(out.float()))
        return (rgb01 * 2 - 1).to(out.dtype)


def pyramid_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill holes from their surroundings (push-pull): (B, C, H, W), mask (B, 1, H, W) 1 = hole.

    Known pixels are averaged down a pyramid (each level ignores holes) until every pixel
    of a level has a known value; filling then goes back up, each hole pixel taking the
    bilinear enlargement of the next coarser level. Known pixels are returned unchanged.
    """
    known = 1.0 - mask
    levels = [(image * known, known)]
    while True:
        v, w = levels[-1]
        if bool((w > 0).all()) or min(v.shape[-2:]) <= 1:
            break
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    v, w = levels[-1]
    filled = v / w.clamp_min(1e-8)
    if not bool((w > 0).all()):  # nothing known at all: mid-grey
        filled = torch.where(w > 0, filled, torch.zeros_like(filled))
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(filled, size=v.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(w > 0, v / w.clamp_min(1e-8), up)
        # partially known pixels of a coarse level are averages; at level 0 w is 0 or 1
    return image * known + filled * mask


@register_model("pix2pix")
class Pix2Pix(GANModel):
    family: ClassVar[str] = "restoration"
    config_class: ClassVar[type[ModelConfig]] = Pix2PixConfig
    inference_modules: ClassVar[tuple[str, ...]] = ("generator",)
    train_defaults: ClassVar[dict[str, Any]] = {
        "loss": "ns",  # the paper's conditional GAN objective
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": [0.5, 0.999],
        "ema_decay": 0.999,
        "batch_size": 16,
    }

    def __init__(self, config: Pix2PixConfig):
        super().__init__(config)
        self.config: Pix2PixConfig = config
        self.generator = UNetGenerator(config)
        cond = IN_CHANNELS[config.task]
        self.discriminator = PatchDiscriminator(cond + 3, config.d_width, config.patch_layers)
        # N(0, 0.02) as in the paper where instance norm follows; a norm-free sr trunk keeps
        # PyTorch's fan-in scaled init (small fixed-std weights would shrink its signal).
        self.discriminator.apply(init_weights)
        if config.norm_kind == "instance":
            self.generator.apply(init_weights)
        # An untrained sr / inpaint net starts as bicubic / the pyramid fill.
        for head in self.generator.heads.values():
            if config.task != "colorize":
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def multiple(self) -> int:
        """The generator's total stride: inputs are padded to a multiple of it."""
        return 2 ** self.config.n_down

    def prepare(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What a user has -> the generator's input.

        sr: the small picture (B, 3, h, w), returned as is. inpaint: the picture
        (B, 3, H, W) and its mask (B, 1, H, W), 1 = hole -> (B, 4, H, W). colorize: a
        picture (B, 3, H, W) (its luma is used) or (B, 1, H, W) luma -> (B, 1, H, W).
        All in [-1, 1].
        """
        task = self.config.task
        if task == "sr":
            return image
        if task == "inpaint":
            if mask is None:
                raise ModelError("inpainting needs a mask", code="missing_mask")
            mask = (mask > 0.5).to(image.dtype)
            return torch.cat([pyramid_fill(image, mask), mask], dim=1)
        return luma(image) if image.shape[1] == 3 else image

    def condition(self, x_in: torch.Tensor, scale: int) -> torch.Tensor:
        """What the discriminator sees beside a picture: the input at the output's size."""
        if scale == 1:
            return x_in
        return F.interpolate(x_in, scale_factor=float(scale), mode="bicubic",
                             align_corners=False)

    def restore(self, x_in: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        return self.generator(x_in, scale)
