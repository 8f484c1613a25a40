"""How many images/s the packed cache + InMemoryLoader feed a training loop.

    python benchmarks/loader_throughput.py [--home DIR] [--images 2000] [--res 64] [--seconds 2]

Builds (if needed) a synthetic multi-style dataset of procedurally drawn images
in a temporary POLYCHROME_HOME (or --home, reused across runs), builds its
packed cache (timed), then iterates `loader.forever()` touching every batch, for
batch sizes 64 and 256, with and without diff_augment, on 2 threads (--threads).
Prints figures only; never asserts timings. Target: >= 20,000 images/s for the
plain loader at batch 64.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 20_000
DOMAINS = ("stripes", "blobs", "rings", "noise")


def _draw(style: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One (H, W, 3) uint8 image in a style; sizes vary so the cache has to square them."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    if style == "stripes":
        period, angle = rng.uniform(4, 16), rng.uniform(0, np.pi)
        t = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
        img = base + 80 * t
    elif style == "blobs":
        img = np.full((h, w, 3), 255.0, dtype=np.float32)
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 16)
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            img[inside] = rng.uniform(0, 255, size=3)
    elif style == "rings":
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)[..., None]
        img = base * (0.5 + 0.5 * np.cos(d / rng.uniform(2, 6)))
    else:
        img = base + rng.normal(0, 40, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(home: Path, name: str, n: int, res: int) -> Path:
    """$HOME/datasets/<name>/1 in the store's layout; reused when already there."""
    from polychrome.imageio import encode_png

    root = home / "datasets" / name / "1"
    if (root / "manifest.json").is_file():
        return root
    rng = np.random.default_rng(0)
    entries, counts = [], {d: 0 for d in DOMAINS}
    for i in range(n):
        style = DOMAINS[i % len(DOMAINS)]
        h, w = res + int(rng.integers(0, res // 2)), res + int(rng.integers(0, res // 2))
        arr = _draw(style, rng, h, w)
        rel = f"images/{style}/img{i // len(DOMAINS):05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode_png(arr, compress_level=1))
        counts[style] += 1
        entries.append({"file": rel, "domain": style, "source_name": rel,
                        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "phash": "0" * 16,
                        "width": w, "height": h})
    entries.sort(key=lambda e: (e["domain"], e["file"]))
    (root / "manifest.json").write_text(json.dumps(
        {"name": name, "version": 1, "source": "synthetic", "domains": counts, "rejected": {},
         "images": entries}))
    return root


def measure(loader, seconds: float) -> float:
    """Images/s over at least `seconds` of a loop that touches every batch."""
    it = loader.forever()
    for _ in range(3):  # warm-up: page in the cache, allocator, first epoch order
        next(it)[0].sum()
    done, t0 = 0, time.perf_counter()
    while True:
        x, y = next(it)
        x.sum()  # the "training step": touch every pixel
        done += x.shape[0]
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and done >= 20 * x.shape[0]:
            return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=None, help="reuse this POLYCHROME_HOME")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = ap.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="polychrome-bench-"))
    os.environ["POLYCHROME_HOME"] = str(home)
    import torch

    from polychrome.data.augment import diff_augment
    from polychrome.data.cache import build_cache, load_packed
    from polychrome.data.loader import InMemoryLoader

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    root = make_dataset(home, "bench", args.images, args.res)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_cache(root, args.res)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = load_packed(root, args.res)
    t_load = time.perf_counter() - t0

    print(f"dataset   {len(packed)} images, {len(packed.domains)} domains, {args.res} px, "
          f"home {home}")
    print(f"write     {t_make:6.2f} s  (synthetic PNGs; skipped when reused)")
    print(f"build     {t_build:6.2f} s  ({len(packed) / t_build:,.0f} images/s, decode + square "
          f"+ LANCZOS, 2 threads)")
    print(f"load      {t_load * 1000:6.1f} ms (cached, reused)")
    print(f"threads   {torch.get_num_threads()}")
    print()
    print(f"{'batch':>6} {'augment':>14} {'images/s':>12}")
    results = {}
    for bs in (64, 256):
        for name, transform in (("none", None), ("diff_augment", diff_augment)):
            loader = InMemoryLoader(packed, bs, seed=0, transform=transform)
            rate = measure(loader, args.seconds)
            results[(bs, name)] = rate
            print(f"{bs:>6} {name:>14} {rate:>12,.0f}")
    plain = results[(64, "none")]
    print()
    print(f"plain loader, batch 64: {plain:,.0f} images/s vs target {TARGET:,} "
          f"({plain / TARGET:.1f}x)")


if __name__ == "__main__":
    main()
