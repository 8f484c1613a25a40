"""How much a translator's seeds change a restyle, next to how much its styles do.

    python benchmarks/seed_diversity.py --model MODEL --dataset DATASET [--n 40]
        [--seeds 4] [--size N] [--threads 2] [--json docs/quality/seed_diversity.json]

The page's "Make variations" restyles one picture into one style with seeds 0, 1, 2, 3
(`restyle(model, picture, style=S, seed=0, variations=4)`, latent-guided). This script
does exactly that for --n held-out pictures of DATASET (its fixed held-out split, file
stems the model never trained on; at most --n, spread evenly over the split's file order,
so every style folder is represented) and every style of the model, then measures, on the outputs as the pipeline returns them (uint8 RGB):

- seeds: the mean over all (picture, style) of the mean over seed pairs of the pixel L1
  (0..1) and of 1 - SSIM of the luma (BT.601, Gaussian window 11 px), between two seeds'
  outputs of the same picture and style;
- styles: the same two distances between two styles' outputs of the same picture and
  seed, averaged over style pairs and seeds;
- ratio: seeds / styles (1 would mean a new seed changes the picture as much as a new
  style; near 0, the variations look alike).

Writes the JSON (--json: command, commit, machine, settings and figures, overall and per
style). Figures, not pass/fail: the exit code is 0 whenever the measurement finishes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import run_facts, run_script

from polychrome.data.cache import resolve_dataset_dir
from polychrome.errors import ConfigError
from polychrome.metrics.evaluator import dataset_identity
from polychrome.metrics.restoration import dataset_pictures, luma_y, ssim
from polychrome.persistence.models import load_model
from polychrome.pipelines.style import restyle
from polychrome.utils.atomic import atomic_write_json

log = logging.getLogger("seed_diversity")


def distances(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(pixel L1 in 0..1, 1 - SSIM of the luma) of two (H, W, 3) uint8 pictures."""
    l1 = float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / 255.0
    return l1, 1.0 - ssim(luma_y(a), luma_y(b))


def _mean_pairs(arrays: list[np.ndarray]) -> tuple[float, float]:
    pairs = [distances(a, b) for a, b in itertools.combinations(arrays, 2)]
    return float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs]))


def measure(model: Any, pictures: list[tuple[str, np.ndarray]], *, seeds: int,
            size: int | None = None) -> dict[str, Any]:
    """Seed and style distances of `model`'s restyles of `pictures` (see the module doc)."""
    styles = list(model.style_names)
    if len(styles) < 2 or seeds < 2:
        raise ConfigError("seed diversity needs a model with 2 or more styles and --seeds >= 2")
    per_style: dict[str, dict[str, list[float]]] = {
        s: {"seed_l1": [], "seed_dssim": []} for s in styles}
    style_l1: list[float] = []
    style_dssim: list[float] = []
    shapes = set()
    for name, arr in pictures:
        outs = {s: [im.array for im in restyle(model, [arr], style=s, seed=0, variations=seeds,
                                                size=size)] for s in styles}
        shapes.add(outs[styles[0]][0].shape)
        for s in styles:
            l1, dssim = _mean_pairs(outs[s])
            per_style[s]["seed_l1"].append(l1)
            per_style[s]["seed_dssim"].append(dssim)
        for k in range(seeds):
            l1, dssim = _mean_pairs([outs[s][k] for s in styles])
            style_l1.append(l1)
            style_dssim.append(dssim)
        log.info("%s: done", name)
    seed_l1 = float(np.mean([v for d in per_style.values() for v in d["seed_l1"]]))
    seed_dssim = float(np.mean([v for d in per_style.values() for v in d["seed_dssim"]]))
    overall = {"seed_l1": seed_l1, "style_l1": float(np.mean(style_l1)),
               "seed_dssim": seed_dssim, "style_dssim": float(np.mean(style_dssim))}
    overall["ratio_l1"] = overall["seed_l1"] / overall["style_l1"]
    overall["ratio_dssim"] = overall["seed_dssim"] / overall["style_dssim"]
    return {"styles": styles, "output_shapes": sorted(list(s) for s in shapes),
            "overall": overall,
            "per_style": {s: {k: float(np.mean(v)) for k, v in d.items()}
                          for s, d in per_style.items()}}


def spread(items: list[Any], n: int) -> list[Any]:
    """At most `n` of `items`, evenly spaced over the list (first one included)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a registered translator or a model dir")
    ap.add_argument("--dataset", required=True,
                    help="an imported dataset (name[:version]): its held-out pictures")
    ap.add_argument("--n", type=int, default=40, help="held-out pictures (default 40)")
    ap.add_argument("--seeds", type=int, default=4, help="variations per style (the page's 4)")
    ap.add_argument("--size", type=int, default=None,
                    help="working size (longer side) of a native model (default: its own)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ConfigError("--n must be at least 1")
    facts = run_facts()
    model = load_model(args.model)
    dataset_dir = resolve_dataset_dir(args.dataset)
    ds_name, ds_version = dataset_identity(dataset_dir)
    pictures = spread(dataset_pictures(dataset_dir, "heldout"), args.n)
    if not pictures:
        raise ConfigError(f"{args.dataset} has no held-out pictures")
    t0 = time.perf_counter()
    figures = measure(model, pictures, seeds=args.seeds, size=args.size)
    report = {**facts, "model": args.model, "model_step": model.meta.get("step"),
              "dataset": f"{ds_name}:{ds_version} (heldout)", "n_pictures": len(pictures),
              "seeds": list(range(args.seeds)), "size": args.size,
              "seconds": round(time.perf_counter() - t0, 1), **figures}
    o = figures["overall"]
    print(f"{args.model}: {len(pictures)} held-out pictures x {len(figures['styles'])} styles "
          f"x {args.seeds} seeds: pixel L1 between seeds {o['seed_l1']:.4f}, between styles "
          f"{o['style_l1']:.4f} (ratio {o['ratio_l1']:.2f}); 1 - SSIM {o['seed_dssim']:.4f} "
          f"vs {o['style_dssim']:.4f} (ratio {o['ratio_dssim']:.2f})")
    if args.json:
        atomic_write_json(args.json, report)
        print(f"written: {args.json}", file=sys.stderr)
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
