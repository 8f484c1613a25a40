"""How fast `polychrome data import` gets through many small images.

    python benchmarks/import_throughput.py [--images 10000] [--size 64] [--domains 4]

Builds a synthetic folder of distinct smooth PNGs (several style folders) in a temp
dir, imports it into a temp POLYCHROME_HOME (folder and zip source) and prints
images/s and a per-stage profile. Figures only: nothing here is pass/fail.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def build_folder(root: Path, n: int, size: int, domains: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        arr = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        d = root / f"style{i % domains}"
        d.mkdir(parents=True, exist_ok=True)
        arr.save(d / f"{i // domains:05d}.png", compress_level=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="print the top functions")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pc-import-bench-"))
    os.environ["POLYCHROME_HOME"] = str(work / "home")
    from polychrome.persistence.datasets import import_dataset  # after POLYCHROME_HOME is set

    try:
        t0 = time.perf_counter()
        build_folder(work / "src", args.images, args.size, args.domains)
        print(f"built {args.images} {args.size}px PNGs in {time.perf_counter() - t0:.1f} s")
        prof = cProfile.Profile() if args.profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        r = import_dataset(work / "src", "bench")
        if prof:
            prof.disable()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"folder import: {r['images']} images in {dt:.1f} s = {r['images'] / dt:.0f} images/s"
              f", {cpu:.1f} CPU-s  (rejected {sum(r['rejected'].values())})")
        with zipfile.ZipFile(work / "src.zip", "w") as z:
            for p in sorted((work / "src").rglob("*.png")):
                z.write(p, p.relative_to(work / "src").as_posix())
        t0, c0 = time.perf_counter(), time.process_time()
        r = import_dataset(work / "src.zip", "bench-zip")
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"zip import:    {r['images']} images in {dt:.1f} s = {r['images'] / dt:.0f} images/s"
              f", {cpu:.1f} CPU-s")
        print(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(wall figures scale with it; CPU-s do not)")
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
