"""Colour spaces the restoration models and their metrics share (torch, differentiable).

Pictures are (B, 3, H, W) RGB in [0, 1] here (sRGB, gamma-encoded), except where a
function says [-1, 1]. Luma is BT.601 (JPEG's Y): linear in the gamma-encoded RGB, so a
chroma offset with zero luma can be scaled without changing the luma at all, which is how
`chroma_to_rgb` keeps the input's luminance exact while staying inside the RGB cube.
"""

from __future__ import annotations

import torch

LUMA = (0.299, 0.587, 0.114)  # BT.601 / JPEG
_CB, _CR = 0.5 / (1 - LUMA[2]), 0.5 / (1 - LUMA[0])  # 0.564, 0.713: scale B-Y, R-Y to +-0.5


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): Y = 0.299 R + 0.587 G + 0.114 B (any value range)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> Y in [0, 1], Cb and Cr in [-0.5, 0.5]."""
    y = luma(rgb)
    return torch.cat([y, (rgb[:, 2:3] - y) * _CB, (rgb[:, 0:1] - y) * _CR], dim=1)


def chroma_to_rgb(y: torch.Tensor, cbcr: torch.Tensor) -> torch.Tensor:
    """Y (B, 1, H, W) in [0, 1] and Cb, Cr (B, 2, H, W) -> RGB in [0, 1] with luma exactly Y.

    RGB = Y + c where the offset c (from Cb, Cr) has zero luma. Where Y + c leaves the
    cube, c is shrunk toward grey by the largest factor t in [0, 1] that keeps every
    channel in [0, 1] (grey Y itself is always inside), so the luma stays Y.
    """
    cb, cr = cbcr[:, 0:1], cbcr[:, 1:2]
    dr = cr / _CR
    db = cb / _CB
    dg = -(LUMA[0] * dr + LUMA[2] * db) / LUMA[1]
    c = torch.cat([dr, dg, db], dim=1)  # (B, 3, H, W), luma(c) == 0
    y = y.clamp(0, 1)
    room = torch.where(c > 0, (1 - y) / c.clamp_min(1e-12),
                       torch.where(c < 0, y / (-c).clamp_min(1e-12), torch.full_like(c, 2.0)))
    t = room.amin(dim=1, keepdim=True).clamp(0, 1)
    return y + t * c


def _srgb_to_linear(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v <= 0.04045, v / 12.92, ((v.clamp_min(0) + 0.055) / 1.055) ** 2.4)


# sRGB (D65) -> XYZ, rows X, Y, Z; then normalised by the D65 white point.
_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> CIE L*a*b* (D65): L in [0, 100], a, b about +-100."""
    lin = _srgb_to_linear(rgb.clamp(0, 1).to(torch.float64))
    m = torch.tensor(_RGB_TO_XYZ, dtype=lin.dtype, device=lin.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    xyz = xyz / torch.tensor(_WHITE, dtype=lin.dtype, device=lin.device).view(1, 3, 1, 1)
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp_min(1e-12) ** (1 / 3), (kappa * xyz + 16) / 116)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    lab = torch.cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)
    return lab.to(rgb.dtype if rgb.is_floating_point() else torch.float32)
