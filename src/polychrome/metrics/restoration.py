"""Restoration metrics (super-resolution, inpainting, colorization) with classical baselines.

Every figure compares 8-bit pictures, as a user gets them, with the true photograph.

Super-resolution (task sr, factor s)
  The truth is cropped to a multiple of s (top-left kept); the small picture is made as in
  training with degrade "clean": the antialiased bicubic downscale
  (`data.degrade.downscale`) rounded to 8 bits. Restored pictures are compared on the
  luminance, Y = 0.299 R + 0.587 G + 0.114 B (BT.601 as JPEG defines it: full range
  [0, 255], not rounded), with a border of s pixels cropped on every side:
    psnr_y   10 log10(255^2 / MSE)                        (inf for identical pictures)
    ssim_y   SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01,
             K2 = 0.03, L = 255, mean over the valid window positions
  for the model ("ours") and two baselines: PIL BICUBIC and PIL LANCZOS enlargements of
  the same small picture. (Papers that use the studio-range Y, 16-235, get PSNR values
  20 log10(255 / 219) = 1.32 dB higher for the same pictures; gains over a baseline are
  the same either way.)

Inpainting (task inpaint)
  Holes: one free-form mask per photo from `data.degrade.random_masks` (strokes and boxes,
  5-40 % of the area) at the photo's own size, drawn from a seed fixed per photo (its file
  stem and `seed`), so every run and every model sees the same holes. Inside the holes,
  on RGB in [0, 255]: psnr_mask and l1_mask (mean absolute error per channel value), for
  the model and two baselines: the pyramid (push-pull) fill the model starts from
  (`pix2pix.pyramid_fill`), and the harmonic fill (`harmonic_fill`): the solution of
  Laplace's equation inside the holes with the known pixels as the boundary condition,
  i.e. every hole pixel is the average of its 4 neighbours (at the picture's edge, of
  those that exist).

Colorization (task colorize)
  The input is the photo in grey (BT.601 luma, 8 bits, `pipelines.restore.grey_u8`).
    ab_error        mean over pixels of the Euclidean distance in CIE a*b* (D65,
                    `colour.rgb_to_lab`) between a picture and the truth
    colourfulness   Hasler & Suesstrunk 2003 on RGB in [0, 255]: rg = R - G,
                    yb = (R + G) / 2 - B, M = sqrt(sd_rg^2 + sd_yb^2)
                    + 0.3 sqrt(mean_rg^2 + mean_yb^2)
    luma_max_diff   max |Y(ours) - Y(input)|: the luma the model was given is kept
  Baselines: "grey" (a* = b* = 0 everywhere: the input itself) and "mean chroma" (every
  pixel gets the mean a*b* of the training photos, `mean_chroma`).

Goals (`goals`): sr x4 >= +1.0 dB and x2 >= +1.5 dB mean Y-PSNR over bicubic; inpaint >=
+2 dB mean PSNR inside the holes over the harmonic fill; colorize: mean ab error below the
mean-chroma baseline's, and mean colourfulness within 25 % of the real photos'.

Entry points: `evaluate_restoration(model, pictures, ...)` (one task, a list of pictures)
and `evaluate_restoration_model(spec, images=...)` (what `polychrome eval` calls).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import correlate1d

from ..colour import LUMA, rgb_to_lab
from ..data.degrade import downscale, random_masks
from ..errors import ConfigError, PolychromeError
from ..imageio import decode_image, from_tensor, to_tensor
from ..models.base import GANModel
from ..models.zoo.pix2pix import pyramid_fill
from ..pipelines.restore import grey_u8, require_restoration, restore_array

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SR_GOALS_DB = {2: 1.5, 4: 1.0}  # mean Y-PSNR gain over bicubic
INPAINT_GOAL_DB = 2.0  # mean PSNR gain inside the holes over the harmonic fill
COLOURFULNESS_TOLERANCE = 0.25  # ours within 25 % of the real photos'
METHODS = {"sr": ("ours", "bicubic", "lanczos"),
           "inpaint": ("ours", "harmonic", "pyramid"),
           "colorize": ("ours", "mean chroma", "grey")}
BASELINE = {"sr": "bicubic", "inpaint": "harmonic", "colorize": "mean chroma"}


# -- basic measures ---------------------------------------------------------------------------
def _rgb(arr: np.ndarray, what: str = "picture") -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ValueError(f"expected an (H, W, 3) {what}, got shape {arr.shape}")
    return arr


def luma_y(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 255] -> (H, W) float64 Y = 0.299 R + 0.587 G + 0.114 B."""
    a = _rgb(arr).astype(np.float64)
    return LUMA[0] * a[..., 0] + LUMA[1] * a[..., 1] + LUMA[2] * a[..., 2]


def crop_border(arr: np.ndarray, n: int) -> np.ndarray:
    """arr[n:-n, n:-n] (the first two axes); n = 0 returns arr."""
    n = int(n)
    if n < 0:
        raise ValueError(f"border must be >= 0, got {n}")
    if n == 0:
        return arr
    h, w = arr.shape[:2]
    if h <= 2 * n or w <= 2 * n:
        raise ValueError(f"a {w}x{h} picture has nothing left inside a {n} px border")
    return arr[n:h - n, n:w - n]


def crop_to_multiple(arr: np.ndarray, scale: int) -> np.ndarray:
    """The top-left (H - H % s) x (W - W % s) part of a picture."""
    h, w = arr.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"a {w}x{h} picture is smaller than the factor {scale}")
    return arr[:h - h % scale, :w - w % scale]


def _select(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if a.shape != b.shape:
        raise ValueError(f"pictures differ in shape: {a.shape} vs {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)
    if mask is None:
        return d.ravel()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != a.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the pictures {a.shape[:2]}")
    if not mask.any():
        raise ValueError("the mask selects no pixel")
    return d[mask].ravel()


def psnr(a: np.ndarray, b: np.ndarray, *, mask: np.ndarray | None = None,
         peak: float = 255.0) -> float:
    """10 log10(peak^2 / MSE) over all values (or the pixels where `mask`); inf if equal."""
    mse = float(np.mean(np.square(_select(a, b, mask))))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def l1(a: np.ndarray, b: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference over all values (or the pixels where `mask`)."""
    return float(np.mean(np.abs(_select(a, b, mask))))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0, window: int = 11,
         sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004) of two (H, W) pictures: local means, variances and covariance
    under an 11x11 Gaussian window (sigma 1.5; two separable 1-D passes),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2, the SSIM map averaged over the valid positions (the
    window shrinks to an odd size that fits a picture smaller than 11 px)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two (H, W) arrays of one shape, got {a.shape}, {b.shape}")
    size = min(window, *a.shape)
    size -= 1 - size % 2  # odd
    half = size // 2
    ax = np.arange(size, dtype=np.float64) - half
    g = np.exp(-(ax * ax) / (2 * sigma * sigma))
    g /= g.sum()
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    h, w = x.shape

    def filt(t: np.ndarray) -> np.ndarray:  # the window's weighted mean, valid positions
        t = correlate1d(t, g, axis=0, mode="constant")[half:h - half]
        return correlate1d(t, g, axis=1, mode="constant")[:, half:w - half]

    mu_x, mu_y, xx, yy, xy = (filt(t) for t in (x, y, x * x, y * y, x * y))
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / \
        ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return float(np.mean(s))


# -- super-resolution -------------------------------------------------------------------------
def downscale_u8(arr: np.ndarray, scale: int) -> np.ndarray:
    """The small picture training's clean mode makes: antialiased bicubic, 8-bit rounded."""
    x = to_tensor(_rgb(arr))[None]
    return from_tensor(downscale(x, int(scale))[0])


def pil_upscale(small: np.ndarray, scale: int, method: str = "bicubic") -> np.ndarray:
    """PIL BICUBIC or LANCZOS enlargement of an (h, w, 3) uint8 picture by `scale`."""
    filters = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
    h, w = small.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(small))
    return np.asarray(img.resize((w * scale, h * scale), filters[method]))


def sr_scores(out: np.ndarray, truth: np.ndarray, scale: int) -> dict[str, float]:
    """{"psnr_y", "ssim_y"} of an enlargement vs the truth, `scale` px of border cropped."""
    y_out, y_true = (crop_border(luma_y(a), scale) for a in (out, truth))
    return {"psnr_y": psnr(y_out, y_true), "ssim_y": ssim(y_out, y_true)}


def sr_case(model: GANModel, truth: np.ndarray, scale: int, *,
            device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One photo at one factor -> (figures, pictures: input, bicubic, lanczos, ours, truth)."""
    truth = np.ascontiguousarray(crop_to_multiple(_rgb(truth), scale))
    small = downscale_u8(truth, scale)
    ours, _ = restore_array(model, small, scale=scale, device=device)
    pics = {"input": small, "bicubic": pil_upscale(small, scale, "bicubic"),
            "lanczos": pil_upscale(small, scale, "lanczos"), "ours": ours, "truth": truth}
    methods = {m: sr_scores(pics[m], truth, scale) for m in METHODS["sr"]}
    figs = {"scale": scale, "width": truth.shape[1], "height": truth.shape[0],
            "methods": methods,
            "gain_db": methods["ours"]["psnr_y"] - methods["bicubic"]["psnr_y"]}
    return figs, pics


# -- inpainting: masks and the harmonic fill --------------------------------------------------
def photo_seed(name: str, seed: int = 0) -> int:
    """A stable 63-bit seed for a photo from its file stem (same on every machine)."""
    digest = hashlib.sha256(f"{int(seed)}:{PurePosixPath(str(name)).stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def eval_mask(name: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W) bool, True = hole: `random_masks` drawn from the photo's own fixed seed."""
    g = torch.Generator().manual_seed(photo_seed(name, seed))
    return random_masks(1, height, width, g)[0, 0].numpy() > 0.5


def pyramid_fill_u8(arr: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """`pix2pix.pyramid_fill` of an (H, W, 3) uint8 picture: what an untrained model gives."""
    x = to_tensor(_rgb(arr))[None]
    m = torch.from_numpy(np.asarray(holes, dtype=np.float32))[None, None]
    return from_tensor(pyramid_fill(x, m)[0])


def _neighbour_sum(u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = sum of the 4 neighbours of every pixel of (B, C, H, W) u; outside the picture a
    neighbour is the pixel itself (so an edge pixel averages the neighbours it has)."""
    out[..., 1:, :] = u[..., :-1, :]
    out[..., :1, :] = u[..., :1, :]
    out[..., :-1, :] += u[..., 1:, :]
    out[..., -1:, :] += u[..., -1:, :]
    out[..., :, 1:] += u[..., :, :-1]
    out[..., :, :1] += u[..., :, :1]
    out[..., :, :-1] += u[..., :, 1:]
    out[..., :, -1:] += u[..., :, -1:]
    return out


class _Level:
    """One grid of the multigrid hierarchy: its holes, their red/black halves, a buffer."""

    def __init__(self, holes: torch.Tensor, channels: int, dtype: torch.dtype):
        b, _, h, w = holes.shape
        ii = torch.arange(h, device=holes.device)[:, None]
        jj = torch.arange(w, device=holes.device)[None, :]
        red = (ii + jj) % 2 == 0
        self.holes = holes
        self.red, self.black = holes & red, holes & ~red
        self.buf = torch.empty((b, channels, h, w), dtype=dtype, device=holes.device)

    def relax(self, u: torch.Tensor, rhs: torch.Tensor, order: str, sweeps: int) -> None:
        """Red-black Gauss-Seidel in place: u = (sum of the 4 neighbours + rhs) / 4 in holes."""
        halves = (self.red, self.black) if order == "rb" else (self.black, self.red)
        for _ in range(sweeps):
            for half in halves:
                nb = _neighbour_sum(u, self.buf).add_(rhs).mul_(0.25)
                torch.where(half, nb, u, out=u)

    def residual(self, u: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        nb = _neighbour_sum(u, self.buf)
        return torch.where(self.holes, rhs - 4 * u + nb, 0.0)


def _levels(holes: torch.Tensor, channels: int, dtype: torch.dtype,
            min_side: int = 4) -> list[_Level]:
    """Grids halved until tiny or hole-free; a coarse pixel is a hole when all its (up to 4)
    finer pixels are (the pyramid fill's rule: any known child makes it known)."""
    levels = []
    while True:
        levels.append(_Level(holes, channels, dtype))
        if min(holes.shape[-2:]) <= min_side:
            return levels
        coarse = F.avg_pool2d(holes.to(dtype), 2, ceil_mode=True) >= 1.0
        if not bool(coarse.any()):
            return levels
        holes = coarse


def _v_cycle(levels: list[_Level], k: int, rhs: torch.Tensor, sweeps: int = 1,
             coarsest_sweeps: int = 30) -> torch.Tensor:
    """Approximately solve A e = rhs in the holes of level k (e = 0 outside them), where
    A e = 4 e - (sum of the 4 neighbours): one V-cycle from e = 0, symmetric smoothing."""
    lv = levels[k]
    e = torch.zeros_like(rhs)
    if k == len(levels) - 1:
        lv.relax(e, rhs, "rb", coarsest_sweeps)
        lv.relax(e, rhs, "br", coarsest_sweeps)
        return e
    lv.relax(e, rhs, "rb", sweeps)
    r = lv.residual(e, rhs)
    h, w = r.shape[-2:]
    if h % 2 or w % 2:
        r = F.pad(r, (0, w % 2, 0, h % 2))
    # Twice the grid spacing: the coarse equation's right side is 4x the mean residual.
    e_coarse = _v_cycle(levels, k + 1, F.avg_pool2d(r, 2).mul_(4.0), sweeps, coarsest_sweeps)
    up = F.interpolate(e_coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
    e += torch.where(lv.holes, up[..., :h, :w], 0.0)
    lv.relax(e, rhs, "br", sweeps)
    return e


def harmonic_fill_tensor(image: torch.Tensor, mask: torch.Tensor, *, tol: float = 0.01,
                         max_iter: int = 100) -> tuple[torch.Tensor, dict[str, Any]]:
    """The harmonic (membrane) fill of (B, C, H, W) `image` in the holes of (B, 1, H, W) `mask`
    (1 = hole); known pixels are returned unchanged. Returns (filled, facts).

    Inside the holes it solves 4 u_p = sum of u over p's 4 neighbours (at the picture's edge a
    missing neighbour counts as p itself), the known pixels being the boundary condition:
    the fixed point of Jacobi / Gauss-Seidel relaxation of the 4-neighbour average. Started
    from the pyramid fill. Plain relaxation needs O(n^2) sweeps for holes n px wide, so it
    is accelerated, without changing the fixed point: conjugate gradients (per picture and
    channel) preconditioned by one multigrid V-cycle (red-black Gauss-Seidel smoothing,
    holes coarsened by the pyramid rule), run until the largest change of a step is below
    `tol` (in the image's units; with [0, 255] values the default leaves the result within
    about 0.01 of the exact solution).
    """
    if image.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1 \
            or mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"harmonic_fill needs (B, C, H, W) and (B, 1, H, W), got "
                         f"{tuple(image.shape)} and {tuple(mask.shape)}")
    holes = mask > 0.5
    facts: dict[str, Any] = {"iterations": 0, "converged": True, "last_step": 0.0}
    if not bool(holes.any()):
        return image.clone(), facts
    if bool(holes.flatten(1).all(dim=1).any()):
        raise ValueError("harmonic_fill: a picture is all hole (no boundary to fill from)")
    dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    x = image.to(dtype)
    u = pyramid_fill(x, holes.to(dtype)).contiguous()
    levels = _levels(holes, x.shape[1], dtype)
    buf = torch.empty_like(u)

    def apply_a(v: torch.Tensor) -> torch.Tensor:
        return torch.where(holes, 4 * v - _neighbour_sum(v, buf), 0.0)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(-2, -1), keepdim=True)

    r = torch.where(holes, _neighbour_sum(u, buf) - 4 * u, 0.0)  # -(A u) in the holes
    z = _v_cycle(levels, 0, r)
    p = z.clone()
    rz = dot(r, z)
    step_max = math.inf
    for it in range(1, max_iter + 1):
        ap = apply_a(p)
        alpha = rz / dot(p, ap).clamp_min(1e-30)
        step = alpha * p
        u += step
        step_max = float(step.abs().max())
        facts["iterations"] = it
        if step_max < tol:
            break
        r_new = r - alpha * ap
        z_new = _v_cycle(levels, 0, r_new)
        rz_new = dot(r_new, z_new)
        beta = dot(z_new, r_new - r) / rz.clamp_min(1e-30)  # flexible (Polak-Ribiere) CG
        p = z_new + beta * p
        r, rz = r_new, rz_new
    facts["last_step"] = step_max
    if step_max >= tol:
        facts["converged"] = False
        log.warning("harmonic fill: not converged after %d iterations (last step %.3g >= %g)",
                    max_iter, step_max, tol)
    out = torch.where(holes, u, x)
    return out.to(image.dtype) if image.is_floating_point() else out, facts


def harmonic_fill(arr: np.ndarray, holes: np.ndarray, **kw: Any) -> np.ndarray:
    """The harmonic fill of an (H, W, 3) uint8 picture in its holes ((H, W) bool), 8-bit."""
    x = torch.from_numpy(np.ascontiguousarray(_rgb(arr), dtype=np.float32)).permute(2, 0, 1)
    m = torch.from_numpy(np.asarray(holes, dtype=np.float32))[None, None]
    out, _ = harmonic_fill_tensor(x[None], m, **kw)
    u8 = out[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(u8)


def show_holes(arr: np.ndarray, holes: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """The picture with its holes painted in one colour (how the model's input looks)."""
    out = np.array(arr, copy=True)
    out[np.asarray(holes, dtype=bool)] = colour
    return out


def inpaint_scores(out: np.ndarray, truth: np.ndarray, holes: np.ndarray) -> dict[str, float]:
    return {"psnr_mask": psnr(out, truth, mask=holes), "l1_mask": l1(out, truth, mask=holes)}


def inpaint_case(model: GANModel, truth: np.ndarray, holes: np.ndarray, *,
                 device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One photo with its holes -> (figures, pictures: input (holes white), harmonic, pyramid,
    ours, truth, holes). The holes' pixels are blanked before anything sees the picture."""
    truth = np.ascontiguousarray(_rgb(truth))
    holes = np.asarray(holes, dtype=bool)
    given = show_holes(truth, holes, (0, 0, 0))
    ours, _ = restore_array(model, given, holes=holes, device=device)
    t0 = time.perf_counter()
    harmonic = harmonic_fill(given, holes)
    seconds = time.perf_counter() - t0
    pics = {"input": show_holes(truth, holes), "harmonic": harmonic,
            "pyramid": pyramid_fill_u8(given, holes), "ours": ours, "truth": truth,
            "holes": holes}
    methods = {m: inpaint_scores(pics[m], truth, holes) for m in METHODS["inpaint"]}
    figs = {"width": truth.shape[1], "height": truth.shape[0],
            "mask_fraction": float(holes.mean()), "methods": methods,
            "gain_db": methods["ours"]["psnr_mask"] - methods["harmonic"]["psnr_mask"],
            "harmonic_seconds": round(seconds, 3)}
    return figs, pics


# -- colorization -----------------------------------------------------------------------------
def lab(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W, 3) float64 CIE L*a*b* (D65, `colour.rgb_to_lab`)."""
    x = torch.from_numpy(np.ascontiguousarray(_rgb(arr), dtype=np.float64) / 255.0)
    return rgb_to_lab(x.permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()


def ab_error(ab: np.ndarray, ab_true: np.ndarray) -> float:
    """Mean over pixels of the Euclidean distance between (..., 2) a*b* arrays (broadcast)."""
    d = np.asarray(ab, dtype=np.float64) - np.asarray(ab_true, dtype=np.float64)
    return float(np.mean(np.sqrt(np.sum(d * d, axis=-1))))


def colourfulness(arr: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M of an (H, W, 3) RGB picture in [0, 255]."""
    a = _rgb(arr).astype(np.float64)
    rg = a[..., 0] - a[..., 1]
    yb = 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def mean_chroma(pictures: Iterable[np.ndarray], stride: int = 2) -> tuple[float, float]:
    """Mean (a*, b*) over all pixels of the pictures (every `stride`-th along both axes)."""
    total, n = np.zeros(2), 0
    for arr in pictures:
        ab = lab(np.ascontiguousarray(_rgb(arr)[::stride, ::stride]))[..., 1:]
        total += ab.reshape(-1, 2).sum(0)
        n += ab.shape[0] * ab.shape[1]
    if n == 0:
        raise ConfigError("mean chroma: no pictures to average", code="bad_request")
    a, b = total / n
    return float(a), float(b)


def lab_to_rgb_u8(lab_arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) CIE L*a*b* (D65) -> (H, W, 3) uint8 sRGB, clipped to the cube. For showing
    a baseline only (the figures are computed in Lab)."""
    from ..colour import _RGB_TO_XYZ, _WHITE  # the same constants rgb_to_lab uses

    lab_arr = np.asarray(lab_arr, dtype=np.float64)
    fy = (lab_arr[..., 0] + 16) / 116
    f = np.stack([fy + lab_arr[..., 1] / 500, fy, fy - lab_arr[..., 2] / 200], -1)
    eps, kappa = 216 / 24389, 24389 / 27
    xyz = np.where(f ** 3 > eps, f ** 3, (116 * f - 16) / kappa) * np.array(_WHITE)
    lin = xyz @ np.linalg.inv(np.array(_RGB_TO_XYZ)).T
    lin = np.clip(lin, 0, 1)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(srgb * 255), 0, 255).astype(np.uint8)


def colorize_case(model: GANModel, truth: np.ndarray, mean_ab: Sequence[float], *,
                  device: str | torch.device = "cpu"
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One photo -> (figures, pictures: input, mean chroma, grey, ours, truth)."""
    truth = np.ascontiguousarray(_rgb(truth))
    grey = grey_u8(truth)
    ours, _ = restore_array(model, grey, device=device)
    lab_true, lab_ours = lab(truth), lab(ours)
    ab_true = lab_true[..., 1:]
    mean_ab = np.asarray(mean_ab, dtype=np.float64).reshape(2)
    l_grey = lab(grey)[..., :1]
    shown = lab_to_rgb_u8(np.concatenate([l_grey, np.broadcast_to(mean_ab, ab_true.shape)], -1))
    pics = {"input": grey, "mean chroma": shown, "grey": grey, "ours": ours, "truth": truth}
    c_true = colourfulness(truth)
    methods = {
        "ours": {"ab_error": ab_error(lab_ours[..., 1:], ab_true),
                 "colourfulness": colourfulness(ours)},
        "mean chroma": {"ab_error": ab_error(mean_ab, ab_true),
                        "colourfulness": colourfulness(shown)},
        "grey": {"ab_error": ab_error(np.zeros(2), ab_true), "colourfulness": 0.0},
    }
    figs = {"width": truth.shape[1], "height": truth.shape[0], "methods": methods,
            "truth_colourfulness": c_true,
            "colourfulness_ratio": methods["ours"]["colourfulness"] / c_true if c_true > 0
            else None,
            "luma_max_diff": float(np.abs(luma_y(ours) - luma_y(grey)).max())}
    return figs, pics


# -- many photos ------------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    vs = [float(v) for v in values if v is not None]
    return float(np.mean(vs)) if vs else None


def summarise(task: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over photos (PSNR is averaged in dB, per photo, as is usual): per method, the
    gain over the task's baseline, and for sr one such block per factor."""
    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        keys = rs[0]["methods"]["ours"].keys()
        out: dict[str, Any] = {"n": len(rs), "methods": {
            m: {k: _mean(r["methods"][m].get(k) for r in rs) for k in keys}
            for m in METHODS[task]}}
        if task == "sr":
            out["gain_db"] = out["methods"]["ours"]["psnr_y"] - out["methods"]["bicubic"]["psnr_y"]
        elif task == "inpaint":
            out["gain_db"] = (out["methods"]["ours"]["psnr_mask"]
                              - out["methods"]["harmonic"]["psnr_mask"])
            out["mask_fraction"] = _mean(r["mask_fraction"] for r in rs)
        else:
            c_ours = out["methods"]["ours"]["colourfulness"]
            c_true = _mean(r["truth_colourfulness"] for r in rs)
            out["truth_colourfulness"] = c_true
            out["colourfulness_ratio"] = c_ours / c_true if c_true else None
            out["mean_photo_colourfulness_ratio"] = _mean(r["colourfulness_ratio"] for r in rs)
            out["luma_max_diff"] = max(r["luma_max_diff"] for r in rs)
        return out

    if not records:
        return {}
    if task == "sr":
        scales = sorted({r["scale"] for r in records})
        return {f"x{s}": block([r for r in records if r["scale"] == s]) for s in scales}
    return block(records)


def goals(task: str, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal: {"goal": words, "value", "target", "met"}."""
    out: dict[str, dict[str, Any]] = {}
    if task == "sr":
        for key, blk in summary.items():
            s = int(key[1:])
            if s in SR_GOALS_DB:
                out[f"{key} Y-PSNR gain over bicubic"] = {
                    "goal": f">= +{SR_GOALS_DB[s]} dB", "value": blk["gain_db"],
                    "target": SR_GOALS_DB[s], "met": blk["gain_db"] >= SR_GOALS_DB[s]}
    elif task == "inpaint" and summary:
        out["PSNR gain in the holes over the harmonic fill"] = {
            "goal": f">= +{INPAINT_GOAL_DB} dB", "value": summary["gain_db"],
            "target": INPAINT_GOAL_DB, "met": summary["gain_db"] >= INPAINT_GOAL_DB}
    elif task == "colorize" and summary:
        ours = summary["methods"]["ours"]["ab_error"]
        base = summary["methods"]["mean chroma"]["ab_error"]
        out["ab error below mean chroma"] = {"goal": "< mean chroma's", "value": ours,
                                            "target": base, "met": ours < base}
        ratio = summary["colourfulness_ratio"]
        out["colourfulness within 25 % of the real photos'"] = {
            "goal": f"ratio in [{1 - COLOURFULNESS_TOLERANCE:g}, "
                    f"{1 + COLOURFULNESS_TOLERANCE:g}]", "value": ratio,
            "target": [1 - COLOURFULNESS_TOLERANCE, 1 + COLOURFULNESS_TOLERANCE],
            "met": ratio is not None and abs(ratio - 1) <= COLOURFULNESS_TOLERANCE}
    return out


def evaluate_restoration(
        model: GANModel, pictures: Iterable[tuple[str, np.ndarray]], *,
        scales: Sequence[int] | None = None, seed: int = 0,
        mean_ab: Sequence[float] | None = None, device: str | torch.device = "cpu",
        on_case: Callable[[str, dict[str, Any], dict[str, np.ndarray]], None] | None = None,
) -> dict[str, Any]:
    """Run a restoration model on (name, (H, W, 3) uint8) photos at their own size.

    sr: every factor in `scales` (default: all the model's); inpaint: masks from
    `eval_mask(name, H, W, seed)`; colorize: `mean_ab` (the training photos' mean a*, b*)
    is required. `on_case(name, figures, pictures)` sees every case (for sample grids).
    Returns {"task", "n_photos", "records", "summary", "goals"} (+ "scales", "mean_ab").
    """
    task = require_restoration(model)
    if task == "sr":
        own = [int(s) for s in model.config.task_scales()]
        scales = [int(s) for s in (scales or own)]
        bad = [s for s in scales if s not in own]
        if bad:
            raise ConfigError(f"the model is trained for x{', x'.join(map(str, own))}, not "
                              f"x{', x'.join(map(str, bad))}", code="bad_scale")
    elif scales and any(int(s) != 1 for s in scales):
        raise ConfigError(f"scale applies to super-resolution, not {task}", code="bad_scale")
    if task == "colorize" and mean_ab is None:
        raise ConfigError("colorization's mean-chroma baseline needs the training photos' "
                          "mean a*b* (mean_ab)", code="bad_request")
    records: list[dict[str, Any]] = []
    names: list[str] = []
    for name, arr in pictures:
        names.append(name)
        cases: list[tuple[dict[str, Any], dict[str, np.ndarray]]]
        if task == "sr":
            cases = [sr_case(model, arr, s, device=device) for s in scales]
        elif task == "inpaint":
            holes = eval_mask(name, arr.shape[0], arr.shape[1], seed)
            cases = [inpaint_case(model, arr, holes, device=device)]
        else:
            cases = [colorize_case(model, arr, mean_ab, device=device)]
        for figs, pics in cases:
            rec = {"file": name, **figs}
            records.append(rec)
            if on_case is not None:
                on_case(name, rec, pics)
        log.info("%s: %s", task, name)
    if not records:
        raise ConfigError("no photos to evaluate on", code="bad_request")
    summary = summarise(task, records)
    out: dict[str, Any] = {"task": task, "n_photos": len(names), "records": records,
                           "summary": summary, "goals": goals(task, summary)}
    if task == "sr":
        out["scales"] = scales
    if task == "inpaint":
        out["mask_seed"] = seed
    if task == "colorize":
        out["mean_ab"] = [float(v) for v in mean_ab]
    return out


# -- where the photos come from ---------------------------------------------------------------
def picture_files(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """The pictures (by suffix) in `folder` (and its subfolders), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a directory of photos", code="bad_request")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder} has no pictures ({', '.join(IMAGE_SUFFIXES)})",
                          code="bad_request")
    return files


def folder_pictures(folder: str | Path, *, recursive: bool = False
                    ) -> list[tuple[str, np.ndarray]]:
    """(name relative to `folder`, picture) for every picture in it, decoded safely."""
    folder = Path(folder)
    return [(p.relative_to(folder).as_posix(), decode_image(p))
            for p in picture_files(folder, recursive=recursive)]


def dataset_pictures(dataset_dir: Path, split: str) -> list[tuple[str, np.ndarray]]:
    """The pictures of a dataset version's fixed split ("heldout" or "train": by file stem,
    `PackedDataset.split`'s rule), at their stored size."""
    from ..data.cache import _read_manifest, decode_entry, heldout_stems

    manifest, _ = _read_manifest(Path(dataset_dir))
    files = [e["file"] for e in manifest["images"]]
    held = heldout_stems(files)
    want = split == "heldout"
    return [(f, decode_entry(Path(dataset_dir), f)) for f in sorted(files)
            if (PurePosixPath(f).stem in held) == want]


def _dataset_dir(name: str | None) -> Path | None:
    from ..data.cache import resolve_dataset_dir

    if not name:
        return None
    try:
        return resolve_dataset_dir(str(name))
    except PolychromeError:
        return None


def resolve_pictures(model: GANModel, images: str | Path | None, dataset: str | None = None
                     ) -> tuple[list[tuple[str, np.ndarray]], str, Path | None]:
    """(photos, label, training dataset dir or None): the pictures in `images`, else the
    held-out split of `dataset` or of the model's training dataset; a clear error when
    there is none."""
    from .translation import training_split

    trained_on = model.meta.get("dataset")
    train_dir = _dataset_dir(trained_on)
    if images is not None:
        return folder_pictures(images), str(images), train_dir
    if dataset is not None:
        source = _dataset_dir(dataset)
        if source is None:
            raise ConfigError(f"no dataset {dataset!r} in this home: pass --images DIR, a "
                              "folder of photos", code="bad_request")
    elif train_dir is None:
        raise ConfigError(
            ("the model does not record the dataset it was trained on" if not trained_on else
             f"the model's training dataset {trained_on!r} is not in this home")
            + ": pass --images DIR, a folder of photos it never saw", code="bad_request")
    else:
        source = train_dir
    same = train_dir is not None and source.resolve() == train_dir.resolve()
    split = training_split(model) if same else None
    if same and split is not None and split != "train":
        raise ConfigError(f"the model trained on split {split!r} of {source}: it has seen "
                          "every picture there; pass --images DIR, a folder of photos it "
                          "never saw", code="bad_request")
    pics = dataset_pictures(source, "heldout")
    if not pics:
        raise ConfigError(f"{source} has no held-out pictures: pass --images DIR",
                          code="bad_request")
    if same and split is None:
        log.warning("cannot tell which split the model trained on (its run is not here): "
                    "assuming the held-out pictures of %s were not seen", source)
    from .evaluator import dataset_identity

    name, version = dataset_identity(source)
    return pics, f"{name}:{version} (heldout)", train_dir


def resolve_mean_ab(mean_ab: Sequence[float] | None, train_images: str | Path | None,
                    dataset_dir: Path | None) -> tuple[tuple[float, float], str]:
    """(mean a*, b*, where it came from): given, from a folder, or from the train split of
    the model's training dataset."""
    if mean_ab is not None:
        a, b = (float(v) for v in mean_ab)
        return (a, b), "given"
    if train_images is not None:
        return mean_chroma(decode_image(p) for p in picture_files(train_images, recursive=True)
                           ), str(train_images)
    if dataset_dir is not None:
        pics = dataset_pictures(dataset_dir, "train")
        if pics:
            return mean_chroma(arr for _, arr in pics), f"{dataset_dir} (train)"
    raise ConfigError("the mean-chroma baseline needs the training photos' mean colour: pass "
                      "--train-images DIR (the photos the model trained on) or "
                      "--mean-chroma A,B", code="bad_request")


def jsonable(obj: Any) -> Any:
    """Non-finite floats (PSNR of identical pictures) -> None; numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def evaluate_restoration_model(
        spec: str | GANModel, *, images: str | Path | None = None, dataset: str | None = None,
        scales: Sequence[int] | None = None, seed: int = 0,
        mean_ab: Sequence[float] | None = None, train_images: str | Path | None = None,
        device: str | torch.device = "cpu", record: bool = True) -> dict[str, Any]:
    """`polychrome eval` on a restoration model: figures and baselines on a folder of photos
    (`images`), else on the held-out split of `dataset` or of the model's training dataset.

    Returns {"model", "task", "images", "n_photos", "summary", "goals", "records",
    "seconds"} (+ "scales", "mask_seed", "mean_ab" and "mean_ab_from"); for a registered
    model and `record`, the summary goes on its card under "restoration [LABEL]".
    """
    from ..persistence.models import load_model, update_metrics
    from ..sampling import model_identity

    t0 = time.perf_counter()
    model = spec if isinstance(spec, GANModel) else load_model(spec, device=str(device))
    task = require_restoration(model)
    pictures, label, dataset_dir = resolve_pictures(model, images, dataset)
    extra: dict[str, Any] = {}
    if task == "colorize":
        mean_ab, source = resolve_mean_ab(mean_ab, train_images, dataset_dir)
        extra["mean_ab_from"] = source
    result = evaluate_restoration(model, pictures, scales=scales, seed=seed, mean_ab=mean_ab,
                                  device=device)
    name, version = model_identity(model)
    out = jsonable({"model": f"{name}:{version}" if version else name, "images": label,
                    **result, **extra, "seconds": round(time.perf_counter() - t0, 2)})
    ref = getattr(model, "model_ref", None)
    if record and ref is not None and ref.name is not None:
        update_metrics(ref.name, ref.version, {f"restoration [{label}]": card_figures(out)})
        out["recorded"] = True
    return out


def card_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The summary flattened for a model card: {"n", "x2 ours psnr_y", ...}."""
    flat: dict[str, Any] = {"n": result["n_photos"]}
    summary = result["summary"]
    blocks = summary.items() if result["task"] == "sr" else [("", summary)]
    for key, blk in blocks:
        pre = f"{key} " if key else ""
        for m, vals in blk["methods"].items():
            for k, v in vals.items():
                flat[f"{pre}{m} {k}"] = None if v is None else round(v, 4)
        if "gain_db" in blk:
            flat[f"{pre}gain_db"] = round(blk["gain_db"], 4)
    return flat


def format_restoration(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal: one table per task (and factor), then the goals."""
    task = result["task"]

    def f(v: Any, digits: int = 2) -> str:
        if v is None:
            return "inf" if digits == 2 else "-"
        return f"{v:.{digits}f}"

    lines = [f"{result['model']} ({task}) on {result['n_photos']} photos from "
             f"{result['images']}, at their own size"]
    s = result["summary"]
    if task == "sr":
        lines.append("  method     Y-PSNR dB   Y-SSIM   (border of s px cropped)")
        for key, blk in s.items():
            for m in METHODS[task]:
                v = blk["methods"][m]
                lines.append(f"  {key:<3} {m:<9} {f(v['psnr_y']):>7}    {f(v['ssim_y'], 4)}")
            lines.append(f"  {key:<3} gain over bicubic: {blk['gain_db']:+.2f} dB")
    elif task == "inpaint":
        lines.append(f"  holes: {s['mask_fraction']:.1%} of the area on average "
                     f"(seed {result.get('mask_seed', 0)})")
        lines.append("  method      PSNR in holes dB   L1 in holes")
        for m in METHODS[task]:
            v = s["methods"][m]
            lines.append(f"  {m:<10}  {f(v['psnr_mask']):>8}           {f(v['l1_mask'])}")
        lines.append(f"  gain over the harmonic fill: {s['gain_db']:+.2f} dB")
    else:
        a, b = result["mean_ab"]
        lines.append(f"  mean chroma a*={a:.2f} b*={b:.2f} (from {result.get('mean_ab_from')})")
        lines.append("  method        ab error   colourfulness")
        for m in METHODS[task]:
            v = s["methods"][m]
            lines.append(f"  {m:<12}  {f(v['ab_error']):>8}   {f(v['colourfulness'])}")
        lines.append(f"  real photos             {f(s['truth_colourfulness'])}")
        ratio = s["colourfulness_ratio"]
        lines.append(f"  colourfulness ours / real: {f(ratio, 3)}; luma kept to "
                     f"{s['luma_max_diff']:.2f} levels")
    for name, g in result["goals"].items():
        lines.append(f"  goal {name} ({g['goal']}): {'met' if g['met'] else 'NOT met'}")
    return lines
