"""The one tiling engine for every image -> image model: pictures at their own size.

`run_image_model(fn, x, multiple=...)` runs a fully convolutional network on a picture of
any size and aspect and gives back exactly H x W (or H*scale x W*scale):

  1. pad to the network's total stride (`multiple`) with reflection, crop back at the end;
  2. at most `max_pixels`: one pass, the network's own normalisation statistics;
  3. above it: one statistics pass on the whole picture (downscaled to `stats_max_pixels`
     when it is larger) records every instance norm's mean and variance, then the picture
     runs in overlapping tiles normalised with those statistics, so a tile is normalised
     like the whole picture. With full-size statistics and `context` covering the
     network's reach, tiled output agrees with whole output (PSNR >= 40 dB); statistics
     of a downscaled picture are shared by every tile (no seams) but only approximate.

Tiles sit on a grid whose offsets are multiples of `multiple` (pooling and stride phases
match the whole picture). The network sees each tile with `context` more of the picture
around it, and only the tile's own part of the output is kept, so the window's border
(where the network sees padding instead of picture) stays out of the result. Neighbouring
tiles overlap by `overlap` and are feathered linearly across it; the weights of all tiles
sum to 1 at every pixel, and a picture border is never feathered. Output accumulates in
one preallocated float32 canvas, so peak memory is about one window's activations plus
the input and the output.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelError
from ..models.layers import apply_norm_stats, record_norm_stats

log = logging.getLogger(__name__)

Span = tuple[int, int]  # (start, size) along one axis, in padded input pixels
TileBox = tuple[int, int, int, int]  # (top, left, h, w) in padded input pixels


@dataclasses.dataclass(frozen=True)
class TileSettings:
    tile: int = 512  # tile side in pixels at the working size (rounded down to `multiple`)
    overlap: int = 64  # overlap between neighbouring tiles, feathered linearly
    max_pixels: int = 1_048_576  # above this many pixels (W*H at the working size), tile
    stats_max_pixels: int = 1_048_576  # the statistics pass runs on at most this many pixels
    # Extra picture around each tile that the network sees and whose output is dropped: the
    # tile's own border (padding instead of picture) stays outside what is kept. It should
    # cover the network's reach (~32 px for the bundled 32 px translator).
    context: int = 64

    def validate(self) -> None:
        if self.tile < 1 or self.overlap < 0 or self.overlap >= self.tile or self.context < 0:
            raise ConfigError(f"tiling: need tile >= 1, 0 <= overlap < tile and context >= 0, "
                              f"got tile={self.tile}, overlap={self.overlap}, "
                              f"context={self.context}", code="bad_tiling")
        if self.max_pixels < 1 or self.stats_max_pixels < 1:
            raise ConfigError("tiling: max_pixels and stats_max_pixels must be >= 1",
                              code="bad_tiling")


def configured_tiles() -> TileSettings:
    """TileSettings from the installation's settings (tile_side, tile_context, ...)."""
    from ..settings import get_settings

    st = get_settings()
    tile = max(16, st.tile_side)
    return TileSettings(tile=tile, overlap=min(64, tile // 4),
                        context=max(0, min(st.tile_context, tile // 2)),
                        max_pixels=st.tile_max_pixels,
                        stats_max_pixels=st.tile_stats_max_pixels)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """H, W rounded up to a multiple of `multiple` (at least two when multiple > 1, so the
    coarsest feature map has more than one pixel and instance norm is defined)."""
    if multiple < 1:
        raise ConfigError(f"tiling: multiple must be >= 1, got {multiple}", code="bad_tiling")
    if height < 1 or width < 1:
        raise ModelError(f"picture must be at least 1x1, got {width}x{height}",
                         code="bad_size")
    least = 2 if multiple > 1 else 1
    return (max(least, math.ceil(height / multiple)) * multiple,
            max(least, math.ceil(width / multiple)) * multiple)


def _axis_cores(length: int, tile: int, overlap: int, multiple: int) -> list[Span]:
    """Cores covering [0, length) (a multiple of `multiple`): starts on the grid, evenly spread.

    Neighbours overlap by at least `overlap` (as far as the grid allows); the last core
    ends exactly at `length`.
    """
    tile = max(multiple, tile // multiple * multiple)
    if length <= tile:
        return [(0, length)]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    n = math.ceil((length - tile) / step) + 1
    units = (length - tile) // multiple  # free travel, in grid units
    # Rounded even spacing: no gap exceeds `step`, so no overlap is below the requested one.
    starts = [round(units * i / (n - 1)) * multiple for i in range(n)]
    return [(s, tile) for s in starts]


def _axis_windows(cores: list[Span], length: int, context: int, multiple: int) -> list[Span]:
    """Each core widened by `context` (rounded up to the grid) on both sides, within [0, length)."""
    ctx = math.ceil(context / multiple) * multiple
    out = []
    for start, size in cores:
        lo, hi = max(0, start - ctx), min(length, start + size + ctx)
        out.append((lo, hi - lo))
    return out


def _axis_weights(cores: list[Span], windows: list[Span], scale: int) -> list[torch.Tensor]:
    """1-D blend weights per window, at output resolution (size * scale each), float32.

    Zero in the context, 1 inside a core away from its neighbours, and linear across each
    overlap of two cores (seam in its middle): complementary ramps that never touch each
    other, so every position has one tile at weight 1 or two summing to 1.
    """
    n = len(cores)
    seams = [(cores[i + 1][0] + cores[i][0] + cores[i][1]) / 2 for i in range(n - 1)]
    radii = []
    for i in range(n - 1):
        r = (cores[i][0] + cores[i][1] - cores[i + 1][0]) / 2  # half the overlap
        if i > 0:
            r = min(r, (seams[i] - seams[i - 1]) / 2)
        if i < n - 2:
            r = min(r, (seams[i + 1] - seams[i]) / 2)
        radii.append(r)

    def ramp(pos: torch.Tensor, seam: float, r: float) -> torch.Tensor:
        # 0 before the seam, 1 after; linear over [seam - r, seam + r) (pixel centres)
        if r <= 0:
            return (pos >= seam).double()
        return ((pos - (seam - r)) / (2 * r)).clamp(0.0, 1.0)

    out = []
    for i, (start, size) in enumerate(windows):
        pos = start + (torch.arange(size * scale, dtype=torch.float64) + 0.5) / scale
        w = torch.ones(size * scale, dtype=torch.float64)
        if i > 0:
            w = w * ramp(pos, seams[i - 1], radii[i - 1])
        if i < n - 1:
            w = w * (1.0 - ramp(pos, seams[i], radii[i]))
        out.append(w.float())
    return out


def _grid(height: int, width: int, settings: TileSettings, multiple: int
          ) -> tuple[list[Span], list[Span], list[Span], list[Span]]:
    """(row cores, row windows, column cores, column windows) of the padded picture."""
    settings.validate()
    hp, wp = padded_size(height, width, multiple)
    rows = _axis_cores(hp, settings.tile, settings.overlap, multiple)
    cols = _axis_cores(wp, settings.tile, settings.overlap, multiple)
    return (rows, _axis_windows(rows, hp, settings.context, multiple),
            cols, _axis_windows(cols, wp, settings.context, multiple))


def plan_tiles(height: int, width: int, settings: TileSettings = TileSettings(),
               multiple: int = 1) -> list[TileBox]:
    """The windows (top, left, h, w) the network runs on for an H x W picture, row-major.

    In padded coordinates (see `padded_size`); a window is its tile plus context.
    """
    _, rows, _, cols = _grid(height, width, settings, multiple)
    return [(t, left, h, w) for t, h in rows for left, w in cols]


def estimate_tiles(height: int, width: int, settings: TileSettings = TileSettings(),
                   multiple: int = 1, *, force_tiles: bool = False) -> int:
    """How many forward passes over tiles `run_image_model` makes (1 = one whole pass)."""
    hp, wp = padded_size(height, width, multiple)
    if hp * wp <= settings.max_pixels and not force_tiles:
        return 1
    return len(plan_tiles(height, width, settings, multiple))


def feather_weights(height: int, width: int, settings: TileSettings = TileSettings(),
                    multiple: int = 1, scale: int = 1
                    ) -> Iterator[tuple[TileBox, torch.Tensor]]:
    """Each window (as `plan_tiles`) with its blend weights (h * scale, w * scale), float32.

    The weights of all windows sum to 1 at every output pixel of the padded picture.
    """
    row_cores, rows, col_cores, cols = _grid(height, width, settings, multiple)
    wr = _axis_weights(row_cores, rows, scale)
    wc = _axis_weights(col_cores, cols, scale)
    for (t, h), row_w in zip(rows, wr, strict=True):
        for (left, w), col_w in zip(cols, wc, strict=True):
            yield (t, left, h, w), row_w[:, None] * col_w[None, :]


def pad_to(x: torch.Tensor, hp: int, wp: int) -> tuple[torch.Tensor, int, int]:
    """Pad (B, C, H, W) to (B, C, hp, wp), split between the two sides; returns the offsets."""
    h, w = x.shape[-2:]
    top, left = (hp - h) // 2, (wp - w) // 2
    pads = (left, wp - w - left, top, hp - h - top)
    if not any(pads):
        return x, 0, 0
    # Reflection mirrors real content; it needs each pad smaller than the side it mirrors.
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(x, pads, mode=mode), top, left


def _stats_input(xp: torch.Tensor, settings: TileSettings,
                 multiple: int) -> tuple[torch.Tensor, str]:
    """The padded picture for the statistics pass: whole, or downscaled to fit the budget."""
    hp, wp = xp.shape[-2:]
    if hp * wp <= settings.stats_max_pixels:
        return xp, "whole"
    f = math.sqrt(settings.stats_max_pixels / (hp * wp))
    hs = max(multiple, int(hp * f) // multiple * multiple)
    ws = max(multiple, int(wp * f) // multiple * multiple)
    small = F.interpolate(xp, size=(hs, ws), mode="bilinear", align_corners=False,
                          antialias=True)
    return small, "downscaled"


def _check_output(y: torch.Tensor, x: torch.Tensor, scale: int) -> None:
    want = (x.shape[0], x.shape[-2] * scale, x.shape[-1] * scale)
    if y.dim() != 4 or (y.shape[0], y.shape[-2], y.shape[-1]) != want:
        raise ModelError(f"image model gave {tuple(y.shape)} for input {tuple(x.shape)} at "
                         f"scale {scale}: not fully convolutional at this multiple?",
                         code="bad_output")


def run_image_model(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                    multiple: int, scale: int = 1, settings: TileSettings = TileSettings(),
                    force_tiles: bool = False) -> tuple[torch.Tensor, dict]:
    """Run a fully convolutional image model on a picture of any size.

    fn: (B, C, h, w) in [-1, 1] -> (B, Co, h * scale, w * scale) in [-1, 1], for any h, w
    that are multiples of `multiple` (the network's total stride); usually B = 1.
    x: (B, C, H, W), any H, W >= 1. Returns (out (B, Co, H * scale, W * scale), info) with
    info = {"tiles": passes over tiles (1 when whole), "padded": [Hp, Wp],
            "stats": "own" (one pass) | "whole" | "downscaled" (where the statistics
            of a tiled run came from)}.
    """
    if x.dim() != 4:
        raise ModelError(f"expected a (B, C, H, W) picture, got {tuple(x.shape)}",
                         code="bad_input")
    if scale < 1:
        raise ConfigError(f"tiling: scale must be >= 1, got {scale}", code="bad_tiling")
    settings.validate()
    h, w = x.shape[-2:]
    hp, wp = padded_size(h, w, multiple)
    with torch.inference_mode():
        xp, top, left = pad_to(x, hp, wp)  # (B, C, Hp, Wp)
        crop = (slice(None), slice(None), slice(top * scale, (top + h) * scale),
                slice(left * scale, (left + w) * scale))
        if hp * wp <= settings.max_pixels and not force_tiles:
            y = fn(xp)
            _check_output(y, xp, scale)
            return y[crop], {"tiles": 1, "padded": [hp, wp], "stats": "own"}

        del x  # the padded copy is all the tiles need (a 12 MP float picture is 144 MB)
        small, stats_kind = _stats_input(xp, settings, multiple)
        with record_norm_stats() as stats:
            _check_output(fn(small), small, scale)  # only the statistics are kept
        del small
        log.debug("tiling %dx%d (padded %dx%d): %d statistics from %s", w, h, wp, hp,
                  len(stats), stats_kind)

        out: torch.Tensor | None = None
        n = 0
        for (t, lf, th, tw), weight in feather_weights(hp, wp, settings, multiple, scale):
            tile = xp[:, :, t:t + th, lf:lf + tw]  # (B, C, th, tw)
            with apply_norm_stats(stats):  # fresh per tile: calls match the recorded order
                y = fn(tile)
            _check_output(y, tile, scale)
            if out is None:  # the output's channels and dtype are the network's
                out = torch.zeros(y.shape[0], y.shape[1], hp * scale, wp * scale,
                                  dtype=torch.float32, device=y.device)
                out_dtype = y.dtype
            region = out[:, :, t * scale:(t + th) * scale, lf * scale:(lf + tw) * scale]
            region.add_(y.float() * weight.to(y.device))
            n += 1
        assert out is not None  # at least one tile always exists
        log.debug("tiled %dx%d into %d tiles", w, h, n)
        return out[crop].to(out_dtype), {"tiles": n, "padded": [hp, wp], "stats": stats_kind}
