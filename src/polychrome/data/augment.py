"""Batch augmentation on the device: classic (for classifiers / encoders) and differentiable (GANs).

Randomness: every random parameter is drawn per sample on the CPU, from an
explicit `torch.Generator` when one is given, otherwise from the global CPU RNG
(which the trainer saves and restores), then moved to the images' device. So,
with a CPU generator or the global RNG, a seed gives the same augmentation on
CPU and GPU, and resumed runs replay exactly.
Only small (B, k) parameter tensors are drawn; the pixel work stays on the device.

`diff_augment` follows DiffAugment (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training"): the same differentiable ops are
applied to real and fake images before D, so gradients reach G through them.
`AdaptiveAugment` sets their probability with the ADA heuristic (Karras et al.
2020, "Training Generative Adversarial Networks with Limited Data").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError

DIFF_OPS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 1 / 8  # max shift as a fraction of the side (paper: 1/8)
CUTOUT_RATIO = 1 / 2  # side of the masked square as a fraction of the image side (paper: 1/2)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 of `shape` drawn on the generator's device (or the CPU RNG)."""
    src = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=src).to(device)


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ConfigError(f"augmentation expects a float (B, C, H, W) batch, got "
                          f"{x.dtype} {tuple(x.shape)}")


# -- classic ---------------------------------------------------------------------------
class ClassicAugment:
    """Per-sample flip, random-resized crop, small rotation and colour jitter.

    x: (B, 3, H, W) float in [-1, 1] -> same shape, float in [-1, 1].
    crop_scale: range of the crop's *area* as a fraction of the image (square crops,
    resized back to H x W); rotate_deg: max absolute angle; jitter: strength j of
    brightness (+-j), contrast and saturation (x [1-j, 1+j]).

    torchvision's v2 transforms draw one parameter set per call (the whole batch
    shares it) from the global RNG, so the geometry is done here with one
    per-sample `affine_grid` / `grid_sample` pass instead; v2's functional
    grayscale provides the saturation reference.
    """

    def __init__(self, flip: bool = True, crop_scale: tuple[float, float] = (0.8, 1.0),
                 rotate_deg: float = 0.0, jitter: float = 0.0,
                 generator: torch.Generator | None = None):
        lo, hi = crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if not 0.0 <= rotate_deg <= 180.0:
            raise ConfigError(f"rotate_deg must be in [0, 180], got {rotate_deg}")
        if not 0.0 <= jitter <= 1.0:
            raise ConfigError(f"jitter must be in [0, 1], got {jitter}")
        self.flip = flip
        self.crop_scale = (float(lo), float(hi))
        self.rotate_deg = float(rotate_deg)
        self.jitter = float(jitter)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        b, dev = x.shape[0], x.device
        # One draw of all parameters, whatever is enabled, keeps the RNG stream
        # consumption fixed per batch.
        r = _rand((b, 8), self.generator, dev).to(x.dtype)
        flip = (r[:, 0] < 0.5) if self.flip else torch.zeros(b, dtype=torch.bool, device=dev)
        lo, hi = self.crop_scale
        geometric = lo < 1.0 or self.rotate_deg > 0.0
        if geometric:
            side = torch.sqrt(lo + (hi - lo) * r[:, 1])  # crop side, fraction of the image
            cx = (1 - side) * (2 * r[:, 2] - 1)  # crop centre, normalised coords in [-1, 1]
            cy = (1 - side) * (2 * r[:, 3] - 1)
            ang = math.radians(self.rotate_deg) * (2 * r[:, 4] - 1)
            cos, sin = torch.cos(ang), torch.sin(ang)
            fx = torch.where(flip, -1.0, 1.0).to(x.dtype)
            # input coords = side * Rot(ang) @ diag(fx, 1) @ output coords + centre
            theta = torch.stack([
                torch.stack([side * cos * fx, -side * sin, cx], dim=1),
                torch.stack([side * sin * fx, side * cos, cy], dim=1),
            ], dim=1)  # (B, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            # Reflection fills the corners a rotation exposes with image content.
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                              align_corners=False)
        elif self.flip:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)  # exact, no resampling
        if self.jitter > 0.0:
            j = self.jitter
            bright = (j * (2 * r[:, 5] - 1))[:, None, None, None]
            contrast = (1 + j * (2 * r[:, 6] - 1))[:, None, None, None]
            sat = (1 + j * (2 * r[:, 7] - 1))[:, None, None, None]
            x = x + bright
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean
            grey = TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x.mean(1, keepdim=True)
            x = (x - grey) * sat + grey
            x = x.clamp(-1.0, 1.0)
        return x


# -- DiffAugment -----------------------------------------------------------------------
def _parse_policy(policy: str | Sequence[str]) -> list[str]:
    ops = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    ops = [p for p in ops if p]
    unknown = [p for p in ops if p not in DIFF_OPS]
    if unknown:
        raise ConfigError(f"unknown augmentation op(s) {', '.join(unknown)}; "
                          f"known: {', '.join(DIFF_OPS)}")
    return ops


def _color(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Brightness, then saturation, then contrast, each applied with probability p.

    brightness: x + b,                      b in [-0.5, 0.5]
    saturation: (x - g) * s + g,            s in [0, 2], g = per-pixel channel mean
    contrast:   (x - m) * c + m,            c in [0.5, 1.5], m = image mean
    A skipped op is its identity (b = 0, s = 1, c = 1). The three compose to
    c*s*x + [c*(1-s)*g + b + (1-c)*mean(x)] because brightness shifts g and m by b
    and saturation leaves m unchanged; so one fused pass over the full tensor does
    all three, with gradients through g and mean(x) as in the sequential form.
    """
    r = _rand((x.shape[0], 6), gen, x.device).to(x.dtype)
    on = (r[:, 3:] < p).to(x.dtype)  # (B, 3) which ops apply to which sample
    bright = ((r[:, 0] - 0.5) * on[:, 0])[:, None, None, None]
    sat = (1 + (2 * r[:, 1] - 1) * on[:, 1])[:, None, None, None]
    con = (1 + (r[:, 2] - 0.5) * on[:, 2])[:, None, None, None]
    grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    mean = grey.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1), = mean over C, H, W
    offset = con * (1 - sat) * grey + bright + (1 - con) * mean  # (B, 1, H, W)
    return torch.addcmul(offset, x, con * sat)


def _translation(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Shift each sample by whole pixels, up to 1/8 of the side each way, zero fill."""
    b, c, h, w = x.shape
    r = _rand((b, 3), gen, x.device)
    max_y, max_x = round(h * TRANSLATION_RATIO), round(w * TRANSLATION_RATIO)
    on = (r[:, 2] < p).long()  # a skipped sample gets shift 0: the identity
    ty = ((r[:, 0] * (2 * max_y + 1)).long().clamp(max=2 * max_y) - max_y) * on
    tx = ((r[:, 1] * (2 * max_x + 1)).long().clamp(max=2 * max_x) - max_x) * on
    # One gather over flattened pixels: output (i, j) reads input (i - ty, j - tx).
    src_y = torch.arange(h, device=x.device)[None, :] - ty[:, None]  # (B, H)
    src_x = torch.arange(w, device=x.device)[None, :] - tx[:, None]  # (B, W)
    valid = ((src_y >= 0) & (src_y < h))[:, :, None] & ((src_x >= 0) & (src_x < w))[:, None, :]
    index = src_y.clamp(0, h - 1)[:, :, None] * w + src_x.clamp(0, w - 1)[:, None, :]  # (B, H, W)
    moved = x.reshape(b, c, h * w).gather(2, index.reshape(b, 1, h * w).expand(b, c, h * w))
    return (moved * valid.reshape(b, 1, h * w).to(x.dtype)).reshape(b, c, h, w)


def _cutout(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Zero a square of half the side centred anywhere (clipped at the borders)."""
    b, _, h, w = x.shape
    r = _rand((b, 3), gen, x.device)
    ch, cw = max(1, round(h * CUTOUT_RATIO)), max(1, round(w * CUTOUT_RATIO))
    top = (r[:, 0] * h).long().clamp(max=h - 1) - ch // 2
    left = (r[:, 1] * w).long().clamp(max=w - 1) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= top[:, None]) & (ys < top[:, None] + ch)  # (B, H)
    in_x = (xs >= left[:, None]) & (xs < left[:, None] + cw)  # (B, W)
    hole = in_y[:, :, None] & in_x[:, None, :] & (r[:, 2] < p)[:, None, None]  # (B, H, W)
    return x * (~hole)[:, None].to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: str | Sequence[str] = "color,translation,cutout",
                 p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation of a batch; apply it to reals *and* fakes before D.

    x: (B, C, H, W) float, nominally in [-1, 1] (outputs may leave that range, as in
    the paper: colour ops are not clamped). Returns the same shape; gradients flow
    to x. `p` is the per-sample probability of applying each op (colour's three
    parts independently); p = 0 returns x itself.
    """
    _check_batch(x)
    ops = _parse_policy(policy)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augmentation probability must be in [0, 1], got {p}")
    if p == 0.0 or not ops:
        return x
    for op in ops:
        x = _OPS[op](x, p, generator)
    return x


# -- ADA -------------------------------------------------------------------------------
class AdaptiveAugment:
    """Adaptive augmentation probability (ADA): keep E[sign(D(real))] near `target`.

    Call `update(real_logits)` once per D step; every `interval` calls, p moves by
    sign(r_t - target) * images_seen / speed_imgs (so `speed_imgs` images take p
    from 0 to 1), clamped to [0, 1]. Calling the object augments with p.
    Under DDP, pass logits gathered from all ranks (or keep p in sync) so every
    rank augments with the same p.
    """

    def __init__(self, p: float = 0.0, target: float = 0.6, speed_imgs: int = 500_000,
                 interval: int = 4, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None):
        if speed_imgs <= 0 or interval < 1:
            raise ConfigError("AdaptiveAugment needs speed_imgs > 0 and interval >= 1")
        _parse_policy(policy)
        self.p = float(min(max(p, 0.0), 1.0))
        self.target = float(target)
        self.speed_imgs = int(speed_imgs)
        self.interval = int(interval)
        self.policy = policy
        self.generator = generator
        self.rt = 0.0  # last measured E[sign(D(real))], for logs
        self._sign_sum = 0.0
        self._sign_count = 0
        self._images = 0
        self._calls = 0

    def update(self, real_logits: torch.Tensor) -> float:
        """Accumulate sign(D(real)); adjust p every `interval` calls. Returns p."""
        logits = real_logits.detach()
        self._sign_sum += float(torch.sign(logits).sum().item())
        self._sign_count += logits.numel()
        self._images += int(logits.shape[0]) if logits.dim() else 1
        self._calls += 1
        if self._calls >= self.interval:
            self.rt = self._sign_sum / max(1, self._sign_count)
            step = math.copysign(1.0, self.rt - self.target) if self.rt != self.target else 0.0
            self.p = min(max(self.p + step * self._images / self.speed_imgs, 0.0), 1.0)
            self._sign_sum, self._sign_count, self._images, self._calls = 0.0, 0, 0, 0
        return self.p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy, p=self.p, generator=self.generator)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (numbers only), including the partial interval."""
        return {"p": self.p, "target": self.target, "speed_imgs": self.speed_imgs,
                "interval": self.interval, "rt": self.rt, "sign_sum": self._sign_sum,
                "sign_count": self._sign_count, "images": self._images, "calls": self._calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.p = float(state["p"])
            self.target = float(state.get("target", self.target))
            self.speed_imgs = int(state.get("speed_imgs", self.speed_imgs))
            self.interval = int(state.get("interval", self.interval))
            self.rt = float(state.get("rt", 0.0))
            self._sign_sum = float(state.get("sign_sum", 0.0))
            self._sign_count = int(state.get("sign_count", 0))
            self._images = int(state.get("images", 0))
            self._calls = int(state.get("calls", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"bad augmentation state {state!r}: {e}") from None
