"""Training pairs made from the pictures themselves (restoration: sr, inpaint, colorize).

Every function takes a clean batch (B, 3, H, W) in [-1, 1] and an explicit torch
Generator, and draws a fixed number of random values per call, so a resumed run (whose
generator state is checkpointed) replays the same degradations exactly.

  degrade_sr      the picture made smaller by `scale` (antialiased bicubic, as PIL does),
                  with mild blur, noise and JPEG when asked, rounded to 8 bits
  random_masks    free-form holes: thick random strokes and boxes, 5-40 % of the area
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

DEGRADE_MODES = ("clean", "mild")
MASK_AREA = (0.05, 0.40)

# "mild": how often each degradation is applied and how strong it gets.
BLUR_P, BLUR_SIGMA = 0.25, (0.3, 1.2)  # Gaussian blur before downscaling, sigma in HR px
NOISE_P, NOISE_SIGMA = 0.2, (1.0, 4.0)  # Gaussian noise on the small picture, in 8-bit levels
JPEG_P, JPEG_QUALITY = 0.2, (60, 95)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the nearest of the 256 levels an 8-bit picture can hold (still [-1, 1])."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // scale, W // scale): antialiased bicubic (PIL's filter)."""
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    return F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each picture of (B, C, H, W) with its own sigma ((B,) pixels; 0 = untouched)."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)  # (K,)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (B, K)
    b, c, h, w = x.shape
    xp = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    kk = k.repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.conv2d(xp, kk.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, kk.view(b * c, 1, -1, 1), groups=b * c)
    y = y.reshape(b, c, h, w)
    keep = (sigma <= 0).view(-1, 1, 1, 1)
    return torch.where(keep, x, y)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """One (3, h, w) picture in [-1, 1] through a JPEG encode/decode at `quality`."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out.copy()).to(x.device).permute(2, 0, 1).float() / 127.5 - 1


def degrade_sr(hr: torch.Tensor, scale: int, generator: torch.Generator, *,
               mode: str = "clean") -> torch.Tensor:
    """HR (B, 3, H, W) in [-1, 1] -> LR (B, 3, H // scale, W // scale), 8-bit levels.

    clean: antialiased bicubic downscale only. mild: also (per picture, at random) a
    Gaussian blur before it, Gaussian noise and a JPEG round trip after it.
    """
    if mode not in DEGRADE_MODES:
        raise ValueError(f"degrade mode must be one of {DEGRADE_MODES}, got {mode!r}")
    b, dev = hr.shape[0], generator.device
    # (B, 6) uniforms per call (plus the noise in mild mode): a fixed count per batch.
    u = torch.rand(b, 6, generator=generator, device=dev).to(hr.device, torch.float32)
    x = hr.float()
    if mode == "mild":
        sigma = torch.where(u[:, 0] < BLUR_P,
                            BLUR_SIGMA[0] + u[:, 1] * (BLUR_SIGMA[1] - BLUR_SIGMA[0]),
                            torch.zeros_like(u[:, 0]))
        if bool((sigma > 0).any()):
            x = gaussian_blur(x, sigma)
    lr = quantize(downscale(x, scale))
    if mode == "mild":
        noise = torch.randn(lr.shape, generator=generator, device=dev).to(lr.device)
        level = torch.where(u[:, 2] < NOISE_P,
                            NOISE_SIGMA[0] + u[:, 3] * (NOISE_SIGMA[1] - NOISE_SIGMA[0]),
                            torch.zeros_like(u[:, 2])) / 127.5
        lr = quantize(lr + noise * level.view(-1, 1, 1, 1))
        q = JPEG_QUALITY[0] + u[:, 5] * (JPEG_QUALITY[1] - JPEG_QUALITY[0])
        for i in torch.nonzero(u[:, 4] < JPEG_P).flatten().tolist():
            lr[i] = _jpeg(lr[i], int(q[i]))
    return lr.to(hr.dtype)


def random_masks(n: int, height: int, width: int, generator: torch.Generator, *,
                 area: tuple[float, float] = MASK_AREA) -> torch.Tensor:
    """n free-form hole masks: (n, 1, H, W) float, 1 = missing, each covering 5-40 %.

    A mask is a mix of thick random strokes (a few connected segments with round joints)
    and filled boxes, drawn until it covers a target fraction of the area drawn uniformly
    in `area`; the result is clipped to that range by construction (strokes are added only
    while below the target, and at most one stroke or box past it, thinned if needed).
    """
    lo, hi = area
    seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator,
                          device=generator.device).tolist()
    out = np.zeros((n, 1, height, width), dtype=np.float32)
    for i, seed in enumerate(seeds):
        out[i, 0] = _one_mask(np.random.default_rng(seed), height, width, lo, hi)
    return torch.from_numpy(out)


def _one_mask(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> np.ndarray:
    target = rng.uniform(lo, hi)
    side = max(h, w)
    for _attempt in range(8):
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        cover = 0.0
        shapes = 0
        while cover < target and shapes < 40:
            if rng.random() < 0.3:  # a box of 10-40 % of the sides
                bw, bh = (int(rng.uniform(0.1, 0.4) * w) + 1, int(rng.uniform(0.1, 0.4) * h) + 1)
                x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
                draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=255)
            else:  # a stroke: 2-6 segments, width 3-12 % of the side
                width = max(2, int(rng.uniform(0.03, 0.12) * side))
                px, py = rng.uniform(0, w), rng.uniform(0, h)
                for _ in range(int(rng.integers(2, 7))):
                    ang = rng.uniform(0, 2 * math.pi)
                    length = rng.uniform(0.1, 0.4) * side
                    qx = float(np.clip(px + length * math.cos(ang), 0, w - 1))
                    qy = float(np.clip(py + length * math.sin(ang), 0, h - 1))
                    draw.line([(px, py), (qx, qy)], fill=255, width=width)
                    r = width / 2
                    draw.ellipse([qx - r, qy - r, qx + r, qy + r], fill=255)
                    px, py = qx, qy
            shapes += 1
            cover = float(np.count_nonzero(np.asarray(img))) / (h * w)
        if lo <= cover <= hi:
            return (np.asarray(img) > 0).astype(np.float32)
    # Rare: the last shape overshot every time. A centred box of the target area.
    m = np.zeros((h, w), dtype=np.float32)
    bh, bw = max(1, round(h * math.sqrt(target))), max(1, round(w * math.sqrt(target)))
    t, left = (h - bh) // 2, (w - bw) // 2
    m[t:t + bh, left:left + bw] = 1
    return m
