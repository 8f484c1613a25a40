"""Crops mode: train image -> image models on random crops of pictures at their own size.

Instead of squaring every picture to R x R (fit "crop" / "pad"), the packed store keeps
each picture at its own aspect, downscaled once so its shorter side is at most
`max_side` (never upscaled), all rows in one flat uint8 buffer:

    <cache_dir>/datasets/<name>/<version>/crops-<max_side>.safetensors
        pixels   uint8 (T,)    every picture's (3, h, w) pixels, concatenated
        offsets  int64 (N,)    where row i starts in `pixels`
        shapes   int64 (N, 2)  (h, w) of row i
        labels   int64 (N,)
    <cache_dir>/datasets/<name>/<version>/crops-<max_side>.json   (domains, files, manifest sha)

A training crop of side R at scale s (the picture's shorter side after a random
downscale, log-uniform in `scale` = [lo, hi] pixels) is the square region of side
R * short / s of the stored copy, resized to R x R with antialiasing. Crop geometry is
drawn from a seed (`key`) as fractions of the picture, so (a) a batch is a pure
function of the loader's position (exact resume needs no extra state) and (b) two
pictures of the same subject and aspect (same-named files in two style folders) get
the same region for the same key: paired losses stay aligned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import ConfigError, DatasetError
from ..utils.atomic import atomic_path, atomic_write_json
from .cache import (
    PackedDataset,
    _build_lock,
    _read_manifest,
    cache_root,
    decode_entry,
    run_per_entry,
)

log = logging.getLogger(__name__)

CROPS_FORMAT = 1
MAX_STORE_SIDE = 4096


def default_scale(crop: int) -> tuple[int, int]:
    """Shorter-side range a crop of side `crop` is taken at when a run names none."""
    return 2 * crop, 6 * crop


def check_scale(crop: int, scale: tuple[int, int] | list[int]) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"scale must be two integers [lo, hi] (shorter side in pixels), "
                          f"got {scale!r}") from None
    if not crop <= lo <= hi <= MAX_STORE_SIDE:
        raise ConfigError(f"scale [{lo}, {hi}] must satisfy crop ({crop}) <= lo <= hi <= "
                          f"{MAX_STORE_SIDE}: the pictures' shorter side at training time")
    return lo, hi


@dataclasses.dataclass(eq=False)
class PackedCrops(PackedDataset):
    """A dataset of pictures at their own size, handing out random R x R crops.

    Same interface as PackedDataset (labels, domains, files, split, stem_partners,
    gather) with `resolution` = the crop side and `fit` = "crops". `images` is a fixed
    view (one centred crop per picture at the middle of the scale range) for the
    tools that need a tensor of every row (evaluator, metrics, sample grids).
    """

    pixels: torch.Tensor = None  # (T,) uint8
    offsets: torch.Tensor = None  # (N,) int64
    shapes: torch.Tensor = None  # (N, 2) int64 (h, w)
    scale: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        n = int(self.labels.shape[0])
        if self.pixels is None or self.pixels.dtype != torch.uint8 or self.pixels.dim() != 1:
            raise DatasetError("packed crops need a flat uint8 pixel buffer")
        if self.offsets.shape != (n,) or self.shapes.shape != (n, 2) or len(self.files) != n:
            raise DatasetError(f"packed crops rows disagree: {n} labels, "
                               f"{tuple(self.offsets.shape)} offsets, {len(self.files)} files")
        self.fit = "crops"
        self.scale = check_scale(self.resolution, self.scale)
        self._view: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def images(self) -> torch.Tensor:  # type: ignore[override]
        """(N, 3, R, R) uint8: one centred crop per picture at the middle scale."""
        if self._view is None:
            mid = math.sqrt(self.scale[0] * self.scale[1])
            n = len(self)
            geo = torch.tensor([[mid, 0.5, 0.5]], dtype=torch.float64).expand(n, 3)
            self._view = self._crops(torch.arange(n), geo, flip=torch.zeros(n, dtype=torch.bool))
        return self._view

    @images.setter
    def images(self, value: torch.Tensor) -> None:
        pass  # the dataclass __init__ assigns the base field; the view is derived

    def picture(self, row: int) -> torch.Tensor:
        """(3, h, w) uint8: the stored copy of row `row`."""
        h, w = (int(v) for v in self.shapes[row])
        start = int(self.offsets[row])
        return self.pixels[start:start + 3 * h * w].view(3, h, w)

    def subset(self, idx) -> PackedCrops:
        index = torch.as_tensor(np.asarray(idx, dtype=np.int64).reshape(-1))
        rows = index.tolist()
        parts = [self.picture(i).reshape(-1) for i in rows]
        sizes = torch.tensor([p.numel() for p in parts], dtype=torch.int64)
        offsets = torch.cumsum(sizes, 0) - sizes if len(rows) else sizes
        return PackedCrops(images=None, labels=self.labels.index_select(0, index),
                           domains=list(self.domains), files=[self.files[i] for i in rows],
                           resolution=self.resolution, fit="crops",
                           pixels=torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8),
                           offsets=offsets, shapes=self.shapes.index_select(0, index),
                           scale=self.scale)

    # -- crops ---------------------------------------------------------------------------
    def geometry(self, n: int, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n crop draws from `key`: (n, 3) float64 (scale s, top frac, left frac), (n,) flips."""
        g = torch.Generator().manual_seed(int(key) & ((1 << 63) - 1))
        lo, hi = self.scale
        u = torch.rand(n, 3, generator=g, dtype=torch.float64)
        s = torch.exp(math.log(lo) + u[:, 0] * (math.log(hi) - math.log(lo)))
        flip = torch.rand(n, generator=g) < 0.5
        return torch.stack([s, u[:, 1], u[:, 2]], dim=1), flip

    def gather(self, rows: torch.Tensor, key: int = 0) -> torch.Tensor:
        """(B,) rows -> (B, 3, R, R) uint8 random crops, a pure function of (rows, key)."""
        geo, flip = self.geometry(len(rows), key)
        return self._crops(rows, geo, flip)

    def _crops(self, rows: torch.Tensor, geo: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        out = torch.empty((len(rows), 3, r, r), dtype=torch.uint8)
        for j, row in enumerate(rows.tolist()):
            pic = self.picture(row)  # (3, h, w) uint8
            h, w = pic.shape[1:]
            short = min(h, w)
            side = max(1, min(short, round(r * short / float(geo[j, 0]))))  # region, stored px
            top = round(float(geo[j, 1]) * (h - side))
            left = round(float(geo[j, 2]) * (w - side))
            region = pic[:, top:top + side, left:left + side]
            if side != r:
                # antialiased when shrinking; bilinear when a small picture is stretched
                region = F.interpolate(region.unsqueeze(0).float(), size=(r, r), mode="bilinear",
                                       antialias=side > r, align_corners=False)[0]
                region = region.round_().clamp_(0, 255).to(torch.uint8)
            out[j] = region.flip(-1) if bool(flip[j]) else region
        return out


# -- building ------------------------------------------------------------------------------
def crops_paths(dataset_dir: Path, max_side: int) -> tuple[Path, Path]:
    stem = cache_root(dataset_dir) / f"crops-{max_side}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def shrink(arr: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> the same picture with shorter side <= max_side (LANCZOS)."""
    h, w = arr.shape[:2]
    short = min(h, w)
    if short <= max_side:
        return np.ascontiguousarray(arr)
    f = max_side / short
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.array(Image.fromarray(arr, mode="RGB").resize(size, Image.Resampling.LANCZOS))


def build_crop_store(dataset_dir: Path, max_side: int, *, workers: int | None = None) -> Path:
    """Decode every manifest image once, shrink it to `max_side` and pack the lot."""
    dataset_dir = Path(dataset_dir)
    manifest, manifest_sha = _read_manifest(dataset_dir)
    entries = sorted(manifest["images"], key=lambda e: (e["domain"], e["file"]))
    if not entries:
        raise DatasetError(f"dataset {dataset_dir} has no images", code="empty_dataset")
    domains = sorted({e["domain"] for e in entries} | set(manifest.get("domains", {})))
    index = {d: i for i, d in enumerate(domains)}
    arrays: list[np.ndarray | None] = [None] * len(entries)

    def work(i: int) -> None:
        arr = decode_entry(dataset_dir, entries[i]["file"])  # (H, W, 3) uint8
        arrays[i] = np.ascontiguousarray(shrink(arr, max_side).transpose(2, 0, 1))  # (3, h, w)

    t0 = time.perf_counter()
    run_per_entry(work, len(entries), f"crops store {dataset_dir.parent.name}/"
                  f"{dataset_dir.name} <= {max_side}px", workers)
    shapes = torch.tensor([a.shape[1:] for a in arrays], dtype=torch.int64)
    sizes = torch.tensor([a.size for a in arrays], dtype=torch.int64)
    pixels = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays]))
    labels = torch.tensor([index[e["domain"]] for e in entries], dtype=torch.int64)
    st_path, js_path = crops_paths(dataset_dir, max_side)
    with atomic_path(st_path) as tmp:
        save_file({"pixels": pixels, "offsets": torch.cumsum(sizes, 0) - sizes,
                   "shapes": shapes, "labels": labels}, str(tmp),
                  metadata={"format": "polychrome-crops", "manifest_sha256": manifest_sha})
    atomic_write_json(js_path, {"format": CROPS_FORMAT, "domains": domains,
                                "files": [e["file"] for e in entries], "max_side": max_side,
                                "manifest_sha256": manifest_sha, "count": len(entries)})
    log.info("built crops store %s: %d pictures, %.0f MB in %.1f s", st_path, len(entries),
             pixels.numel() / 2**20, time.perf_counter() - t0)
    return st_path


def _load_fresh(dataset_dir: Path, crop: int, scale: tuple[int, int],
                manifest_sha: str) -> PackedCrops | None:
    st_path, js_path = crops_paths(dataset_dir, scale[1])
    try:
        meta = json.loads(js_path.read_text())
        if meta.get("format") != CROPS_FORMAT or meta.get("manifest_sha256") != manifest_sha:
            return None
        with safe_open(str(st_path), framework="pt") as f:
            if (f.metadata() or {}).get("manifest_sha256") != manifest_sha:
                return None
        t = load_file(str(st_path))
        return PackedCrops(images=None, labels=t["labels"], domains=list(meta["domains"]),
                           files=list(meta["files"]), resolution=crop, fit="crops",
                           pixels=t["pixels"], offsets=t["offsets"], shapes=t["shapes"],
                           scale=scale)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, DatasetError) as e:
        if not isinstance(e, FileNotFoundError):
            log.warning("ignoring unreadable crops store %s: %s", st_path, e)
        return None


def load_crops_dir(dataset_dir: str | Path, crop: int,
                   scale: tuple[int, int] | list[int] | None = None) -> PackedCrops:
    """The crops store of one dataset version dir (built when missing or stale)."""
    scale = check_scale(crop, scale if scale is not None else default_scale(crop))
    dataset_dir = Path(dataset_dir)
    _, manifest_sha = _read_manifest(dataset_dir)
    packed = _load_fresh(dataset_dir, crop, scale, manifest_sha)
    if packed is not None:
        return packed
    st_path, _ = crops_paths(dataset_dir, scale[1])
    with _build_lock(st_path.with_suffix(".lock")):
        packed = _load_fresh(dataset_dir, crop, scale, manifest_sha)
        if packed is None:
            build_crop_store(dataset_dir, scale[1])
            packed = _load_fresh(dataset_dir, crop, scale, manifest_sha)
    if packed is None:
        raise DatasetError(f"dataset {dataset_dir} changed while its crops store was built; "
                           "retry", code="stale_cache")
    return packed
