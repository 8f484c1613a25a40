"""Pictures at their own size: restyle wall time, peak memory and tiling fidelity.

    python benchmarks/native_size.py --model MODEL [--style S] [--image PHOTO] [--threads 2]
        [--repeats 5] [--large-repeats 2] [--sizes 577x433,1155x866,4000x3000]
        [--rss-size 4000x3000] [--psnr-size 1024x768] [--stats-size 2048x1536]
        [--format jpeg|png] [--json docs/quality/native_size.json]

MODEL is a crops-mode translator (model.meta["fit"] == "crops": it runs at the picture's
own size). The picture is a smooth synthetic photo-like one (low-frequency colour
field, a few hard-edged shapes, sensor-like noise) or --image, resized to each size
and written to disk as --format.

1. wall time of a full restyle at each size: decode the file from disk with the safe
   decoder, restyle (latent-guided style --style, seed 0; a fresh content cache each
   time so nothing is reused between repeats) and encode the PNG with its metadata;
   p50 / p90 over --repeats (--large-repeats above 4 MP), after one untimed warm-up at
   the smallest size; the stages' p50 and the tiles the tiling engine used;
2. peak RSS (getrusage ru_maxrss) of a fresh child process that imports, loads the
   model and restyles one --rss-size picture (decode, restyle, PNG encode), next to a
   child that only imports and loads the model;
3. tiled vs whole agreement (PSNR of the uint8 outputs): at --psnr-size, the default
   whole pass vs forced tiles of 256 px whose normalisation statistics come from the
   whole picture; at --stats-size, a whole pass vs tiles whose statistics come from a
   downscaled copy (the default settings for a picture above tile_stats_max_pixels,
   and a 4x smaller statistics budget) -- approximate by design.

Times are for this machine as it was (its load average is recorded): compare figures
from one run. Exit code 0 whenever the measurement finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import run_facts, run_script
from PIL import Image, ImageDraw

from polychrome.errors import ConfigError, PolychromeError
from polychrome.imageio import decode_image, encode_png
from polychrome.models.base import GANModel
from polychrome.persistence.models import load_model
from polychrome.pipelines.recipe import ContentCache
from polychrome.pipelines.style import Restyler, restyle
from polychrome.pipelines.style_codes import is_native, size_multiple
from polychrome.pipelines.tiling import padded_size
from polychrome.settings import get_settings
from polychrome.utils.atomic import atomic_write_json

log = logging.getLogger("native_size")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "docs" / "quality" / "native_size.json"
DEFAULT_SIZES = "577x433,1155x866,4000x3000"
LARGE = 4_000_000  # pixels: sizes above this run --large-repeats times
FORCED_TILE_SIDE = 256
FORCED_MAX_PIXELS = 65_536  # any picture above this runs in tiles


# -- pictures -------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    """"WxH" -> (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"a size is WIDTHxHEIGHT in pixels (e.g. 1155x866), got {text!r}") \
            from None
    if w < 8 or h < 8:
        raise ConfigError(f"size {text} is below 8 px")
    return w, h


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: smooth like a photo (low-frequency colour field with a light
    vertical gradient), a few hard-edged shapes, and mild sensor-like noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (6, 8, 3)).astype(np.uint8)
    field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(5):
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        r = rng.uniform(0.05, 0.15) * min(width, height)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([cx - r, cy - r, cx + r, cy + r], fill=colour)
    arr = np.asarray(field, dtype=np.float32)
    arr *= np.linspace(1.1, 0.8, height, dtype=np.float32)[:, None, None]  # sky to ground
    arr += rng.normal(0.0, 3.0, (height, width, 1)).astype(np.float32)  # luminance noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def source_picture(image: Path | None, width: int, height: int) -> np.ndarray:
    if image is None:
        return synthetic_photo(width, height)
    arr = decode_image(image)
    return np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.LANCZOS))


def write_picture(arr: np.ndarray, directory: Path, fmt: str) -> Path:
    h, w = arr.shape[:2]
    path = directory / f"picture-{w}x{h}.{'jpg' if fmt == 'jpeg' else 'png'}"
    if fmt == "jpeg":
        Image.fromarray(arr).save(path, format="JPEG", quality=90)
    else:
        Image.fromarray(arr).save(path, format="PNG")
    return path


# -- measurements ---------------------------------------------------------------------------
def full_restyle(model: GANModel, path: Path, style: str) -> dict[str, Any]:
    """Decode the file, restyle it (nothing cached), encode the PNG: seconds per stage."""
    t0 = time.perf_counter()
    arr = decode_image(path)
    t1 = time.perf_counter()
    out = restyle(model, [arr], style=style, seed=0,
                  restyler=Restyler(model, cache=ContentCache(1)))[0]
    t2 = time.perf_counter()
    png = encode_png(out.array, out.metadata)
    t3 = time.perf_counter()
    if out.array.shape != arr.shape:
        raise PolychromeError(f"restyle gave {out.array.shape} for {arr.shape}: not a "
                              "native-size result")
    return {"total": t3 - t0, "decode": t1 - t0, "restyle": t2 - t1, "encode": t3 - t2,
            "tiles": int(out.metadata["tiles"]), "png_bytes": len(png)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def time_sizes(model: GANModel, style: str, sizes: list[tuple[int, int]], args: argparse.Namespace,
               work: Path) -> list[dict[str, Any]]:
    paths = [write_picture(source_picture(args.image, w, h), work, args.format) for w, h in sizes]
    log.info("warm-up at %dx%d", *sizes[0])
    full_restyle(model, paths[0], style)
    rows = []
    for (w, h), path in zip(sizes, paths, strict=True):
        n = args.large_repeats if w * h > LARGE else args.repeats
        runs = []
        for i in range(n):
            runs.append(full_restyle(model, path, style))
            log.info("%dx%d run %d/%d: %.2f s (%d tiles)", w, h, i + 1, n, runs[-1]["total"],
                     runs[-1]["tiles"])
        totals = [r["total"] for r in runs]
        rows.append({
            "width": w, "height": h, "megapixels": round(w * h / 1e6, 2), "repeats": n,
            "file": args.format, "file_bytes": path.stat().st_size,
            "p50_s": round(percentile(totals, 50), 3), "p90_s": round(percentile(totals, 90), 3),
            "min_s": round(min(totals), 3), "max_s": round(max(totals), 3),
            **{f"{k}_p50_s": round(percentile([r[k] for r in runs], 50), 3)
               for k in ("decode", "restyle", "encode")},
            "tiles": runs[-1]["tiles"], "all_s": [round(t, 3) for t in totals],
        })
    return rows


def child_rss(args: argparse.Namespace, mode: str, path: Path | None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script as a fresh process doing only `mode`; its JSON line back."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--model",
           args.model, "--style", args.style, "--threads", str(args.threads)]
    if path is not None:
        cmd += ["--image", str(path)]
    # Through a shell that forks it: Linux carries a process's peak RSS across execve, so
    # a child exec'd straight from this (large) process would report this one's peak.
    done = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise PolychromeError(f"the {mode} child process failed (exit {done.returncode}): "
                              f"{tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> int:
    """In a fresh process: load the model, and (mode "restyle") restyle one file."""
    t0 = time.perf_counter()
    model = load_model(args.model)
    facts: dict[str, Any] = {"load_s": round(time.perf_counter() - t0, 3)}
    if args.child == "restyle":
        facts.update({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in full_restyle(model, args.image, args.style).items()})
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({**facts, "maxrss_mib": round(kb / 1024, 1), "vmhwm_mib": vm_hwm_mib()}))
    return 0


def vm_hwm_mib() -> float | None:
    """Peak RSS of this process's own address space (Linux /proc; a cross-check)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure_rss(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    w, h = parse_size(args.rss_size)
    path = write_picture(source_picture(args.image, w, h), work, args.format)
    log.info("peak RSS: fresh child processes (load only, then load + restyle %dx%d)", w, h)
    base = child_rss(args, "load", None)
    full = child_rss(args, "restyle", path)
    out = {"width": w, "height": h, "baseline_mib": base["maxrss_mib"],
           "restyle_mib": full["maxrss_mib"],
           "restyle_minus_baseline_mib": round(full["maxrss_mib"] - base["maxrss_mib"], 1),
           "vmhwm_mib": {"baseline": base["vmhwm_mib"], "restyle": full["vmhwm_mib"]},
           "tiles": full["tiles"], "restyle_s": full["total"],
           "picture_mib": round(w * h * 3 / 2**20, 1)}
    if args.rss_untiled:
        log.info("peak RSS of the same restyle in one whole pass (tiling off)")
        whole = child_rss(args, "restyle", path,
                          env={"POLYCHROME_TILE_MAX_PIXELS": str(10 * w * h)})
        out.update({"untiled_mib": whole["maxrss_mib"], "untiled_s": whole["total"]})
        out["vmhwm_mib"]["untiled"] = whole["vmhwm_mib"]
    return out


@contextlib.contextmanager
def tile_env(**values: int) -> Iterator[None]:
    """Set POLYCHROME_TILE_* for the block (settings are re-read when the env changes)."""
    keys = {f"POLYCHROME_{k.upper()}": str(v) for k, v in values.items()}
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _restyle_array(model: GANModel, arr: np.ndarray, style: str) -> tuple[np.ndarray, int]:
    out = restyle(model, [arr], style=style, seed=0,
                  restyler=Restyler(model, cache=ContentCache(1)))[0]
    return out.array, int(out.metadata["tiles"])


def measure_psnr(model: GANModel, style: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    st = get_settings()
    m = size_multiple(model)
    rows = []
    w, h = parse_size(args.psnr_size)
    arr = source_picture(args.image, w, h)
    hp, wp = padded_size(h, w, m)
    if hp * wp > st.tile_max_pixels:
        raise ConfigError(f"--psnr-size {args.psnr_size} does not fit one pass with the "
                          f"current tile_max_pixels ({st.tile_max_pixels}): choose a smaller one")
    if hp * wp > st.tile_stats_max_pixels:
        raise ConfigError(f"--psnr-size {args.psnr_size} is above tile_stats_max_pixels "
                          f"({st.tile_stats_max_pixels}): its statistics would be downscaled")
    log.info("tiled vs whole at %dx%d", w, h)
    whole, t_whole = _restyle_array(model, arr, style)
    with tile_env(tile_max_pixels=FORCED_MAX_PIXELS, tile_side=FORCED_TILE_SIDE):
        tiled, t_tiled = _restyle_array(model, arr, style)
    rows.append({"case": "tiles, statistics of the whole picture", "width": w, "height": h,
                 "tile_side": FORCED_TILE_SIDE, "tiles": t_tiled, "whole_tiles": t_whole,
                 "stats": "whole", "stats_pixels": hp * wp, "psnr_db": round(psnr(tiled, whole), 2)})

    w, h = parse_size(args.stats_size)
    arr = source_picture(args.image, w, h)
    hp, wp = padded_size(h, w, m)
    log.info("downscaled statistics vs whole at %dx%d", w, h)
    with tile_env(tile_max_pixels=2 * hp * wp, tile_stats_max_pixels=2 * hp * wp):
        whole, t_whole = _restyle_array(model, arr, style)
    budgets = [("default", st.tile_stats_max_pixels), ("quarter", st.tile_stats_max_pixels // 4)]
    for label, stats_px in budgets:
        if stats_px >= hp * wp:
            log.warning("--stats-size %s fits the %s statistics budget (%d px): skipped",
                        args.stats_size, label, stats_px)
            continue
        # tiles of the default side, and statistics from a copy downscaled to stats_px
        with tile_env(tile_max_pixels=min(st.tile_max_pixels, hp * wp - 1),
                      tile_stats_max_pixels=stats_px):
            tiled, t_tiled = _restyle_array(model, arr, style)
        rows.append({"case": f"tiles, statistics of a downscaled copy ({label} budget)",
                     "width": w, "height": h, "tile_side": st.tile_side, "tiles": t_tiled,
                     "whole_tiles": t_whole, "stats": "downscaled", "stats_pixels": stats_px,
                     "psnr_db": round(psnr(tiled, whole), 2)})
    return rows


# -- report ---------------------------------------------------------------------------------
def table(report: dict[str, Any]) -> str:
    lines = [f"native-size restyle: {report['model']} (style {report['style']}), "
             f"{report['machine']['threads']} threads on {report['machine']['cores']} cores "
             f"({report['machine']['cpu']}), load average {report['machine']['load_average_1m']}",
             "", "| picture | tiles | runs | p50 s | p90 s | decode p50 | restyle p50 | "
             "PNG encode p50 |", "|---|---|---|---|---|---|---|---|"]
    for r in report.get("timing", []):
        lines.append(f"| {r['width']}x{r['height']} ({r['megapixels']} MP, {r['file']}) | "
                     f"{r['tiles']} | {r['repeats']} | {r['p50_s']:.2f} | {r['p90_s']:.2f} | "
                     f"{r['decode_p50_s']:.2f} | {r['restyle_p50_s']:.2f} | "
                     f"{r['encode_p50_s']:.2f} |")
    rss = report.get("rss")
    if rss:
        lines += ["", "| peak RSS (fresh process) | MiB |", "|---|---|",
                  f"| import + load model | {rss['baseline_mib']:.0f} |",
                  f"| import + load + restyle {rss['width']}x{rss['height']} "
                  f"({rss['tiles']} tiles) | {rss['restyle_mib']:.0f} |",
                  f"| difference | {rss['restyle_minus_baseline_mib']:.0f} |"]
        if "untiled_mib" in rss:
            lines.append(f"| the same restyle in one whole pass (tiling off) | "
                         f"{rss['untiled_mib']:.0f} |")
    if report.get("psnr"):
        lines += ["", "| tiled vs whole | picture | tiles | statistics from | PSNR dB |",
                  "|---|---|---|---|---|"]
        for r in report["psnr"]:
            src = "whole picture" if r["stats"] == "whole" else \
                f"copy at {r['stats_pixels'] / 1e6:.2f} MP (approximate)"
            lines.append(f"| {r['case']} | {r['width']}x{r['height']} | {r['tiles']} x "
                         f"{r['tile_side']} px | {src} | {r['psnr_db']:.2f} |")
    return "\n".join(lines)


# -- entry ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True,
                    help="a crops-mode translator: registered name[:version] or model dir")
    ap.add_argument("--style", default=None, help="target style (default: the model's first)")
    ap.add_argument("--image", type=Path, default=None,
                    help="a real picture, resized to each size (default: synthetic)")
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg",
                    help="file format the pictures are decoded from")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per size")
    ap.add_argument("--large-repeats", type=int, default=2,
                    help="timed runs per size above 4 MP")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="WxH,... timed sizes")
    ap.add_argument("--rss-size", default="4000x3000", help="WxH of the peak-RSS restyle")
    ap.add_argument("--rss-untiled", action="store_true",
                    help="also the peak RSS of that restyle in one whole pass (large!)")
    ap.add_argument("--psnr-size", default="1024x768", help="WxH: tiled vs whole")
    ap.add_argument("--stats-size", default="2048x1536",
                    help="WxH: downscaled statistics vs whole")
    ap.add_argument("--skip", default="",
                    help="comma-separated parts to leave out: timing, rss, psnr")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results JSON")
    ap.add_argument("--child", choices=("load", "restyle"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        torch.set_num_threads(args.threads)
        return child_main(args)
    return run_script(_main, args)


def _main(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.large_repeats < 1 or args.threads < 1:
        raise ConfigError("--repeats, --large-repeats and --threads must be at least 1")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {"timing", "rss", "psnr"}:
        raise ConfigError(f"--skip takes timing, rss, psnr; got {args.skip!r}")
    if args.image is not None and not args.image.is_file():
        raise ConfigError(f"--image {args.image}: no such file")
    t0 = time.perf_counter()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    model = load_model(args.model)
    if not is_native(model):
        raise ConfigError(f"{args.model} is not a crops-mode translator (meta fit "
                          f"{model.meta.get('fit')!r}): it does not run at the picture's size")
    names = list(model.style_names)
    args.style = args.style or names[0]
    if args.style not in names:
        raise ConfigError(f"{args.model} has no style {args.style!r}; it has {', '.join(names)}")
    report: dict[str, Any] = {**run_facts(), "model": args.model, "style": args.style,
                              "picture": str(args.image) if args.image else "synthetic",
                              "settings": {k: getattr(get_settings(), k) for k in (
                                  "tile_max_pixels", "tile_side", "tile_stats_max_pixels",
                                  "native_max_side")}}
    with tempfile.TemporaryDirectory(prefix="native-size-") as tmp:
        work = Path(tmp)
        if "timing" not in skip:
            report["timing"] = time_sizes(model, args.style, sizes, args, work)
        if "rss" not in skip:
            report["rss"] = measure_rss(args, work)
        if "psnr" not in skip:
            report["psnr"] = measure_psnr(model, args.style, args)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.json, report)
    print(table(report))
    print(f"written: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
