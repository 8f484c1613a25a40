"""Restyling held-out photos at their own size: style reached and content kept, vs baselines.

    python benchmarks/photo_quality.py --model MODEL --dataset DATASET [--n 60]
        [--from photo|all] [--long-side 512] [--seed 0] [--threads 2]
        [--evaluator-steps 1500] [--ct-pictures 200] [--ct-style STYLE]
        [--json docs/quality/photo_quality.json] [--md docs/quality/photo_quality.md]
        [--grid docs/quality/photo_styles_grid.png] [--grid-rows 5] [--cell 256]

MODEL is a crops-mode translator (it runs at the picture's own size); DATASET the style
folders it was trained on (crops store at the model's crop and scale range). Pictures
are the dataset's fixed held-out split (file stems the model never trained on), up to
--n per source style, each at its stored size (shorter side <= the scale range's top)
with its longer side capped at --long-side. Each source picture is restyled into every
other style by three methods:

- GAN: `restyle(model, picture, style=TARGET, seed=SEED + i)` (latent-guided);
- colour transfer (Reinhard et al. 2001): each channel's mean and standard deviation in
  the l-alpha-beta space matched to the target style's, pooled over (up to
  --ct-pictures of) the style's TRAINING pictures;
- identity: the picture itself.

Measured per target style and overall (mean over all source -> target pairs):

- style accuracy: an offline evaluator classifies 5 crops of the output (the crops the
  style encoder reads, `style_view`: the picture scaled to the middle of the scale range,
  its centre and four more) and the picture counts as the argmax of the mean
  probability. The evaluator is the dataset's offline evaluator in crops mode
  (`get_offline_evaluator(..., scale=...)`, the one `polychrome eval` uses for crops-mode
  models): trained on random crops across the model's scale range (the dataset's train
  split only; saved beside the dataset as evaluator/crops-<crop>-<lo>-<hi>/ and reused),
  because whole pictures squared to the resolution are a different scale from these
  crops. "real" rows: the same classification of held-out pictures of the target style
  itself (the evaluator's ceiling here);
- SSIM of the luminance (BT.601 luma, Gaussian window 11 px, sigma 1.5), input vs output;
- feature distance: L2 between the evaluator's features of the input's and the output's
  same 5 crops, averaged.

Writes the markdown table (--md, also printed), the JSON (--json) and a sample grid
(--grid): rows = held-out pictures of the source style (photo with --from all), columns
= the source, the GAN in each other style and the colour transfer into --ct-style.
Exit code 0 whenever the measurement finishes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from common import run_facts, run_script
from PIL import Image, ImageDraw, ImageFont

from polychrome.data.cache import (
    heldout_stems,
    load_packed,
    resolve_dataset_dir,
)
from polychrome.data.crops import PackedCrops
from polychrome.errors import ConfigError
from polychrome.imageio import encode_png
from polychrome.metrics.evaluator import OfflineEvaluator, dataset_identity, get_offline_evaluator
from polychrome.metrics.translation import ssim, training_split
from polychrome.models.base import GANModel
from polychrome.persistence.models import load_model
from polychrome.pipelines.style import Restyler
from polychrome.pipelines.style_codes import Picture, is_native, resize_long_side, style_view
from polychrome.utils.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from polychrome.utils.grid import BACKGROUND, CELL_BACKGROUND, PAD, TEXT, fit_cell

log = logging.getLogger("photo_quality")

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "docs" / "quality"
METHODS = ("GAN", "colour transfer", "identity")


# -- colour transfer (Reinhard, Ashikhmin, Gooch & Shirley 2001) ----------------------------
RGB2LMS = np.array([[0.3811, 0.5783, 0.0402],
                    [0.1967, 0.7244, 0.0782],
                    [0.0241, 0.1288, 0.8444]])
# The paper prints the inverse to 4 decimals ([[4.4679, -3.5873, 0.1193], ...]); the exact
# one keeps a picture moved to its own statistics unchanged.
LMS2RGB = np.linalg.inv(RGB2LMS)
LOG2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ \
    np.array([[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])
LAB2LOG = np.linalg.inv(LOG2LAB)
LMS_FLOOR = 1.0 / 255  # log10 needs > 0: black pixels sit at the darkest 8-bit level


def rgb_to_lab(arr: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) float64 l-alpha-beta (Reinhard et al. 2001)."""
    lms = (arr.astype(np.float64) / 255.0) @ RGB2LMS.T
    return np.log10(np.maximum(lms, LMS_FLOOR)) @ LOG2LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(..., 3) l-alpha-beta -> (..., 3) uint8 RGB (clipped)."""
    rgb = (10.0 ** (lab @ LAB2LOG.T)) @ LMS2RGB.T
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def lab_stats(pictures: list[np.ndarray], stride: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in l-alpha-beta, pooled over (H, W, 3) uint8 pictures
    (every `stride`-th pixel along both axes)."""
    total, sq, n = np.zeros(3), np.zeros(3), 0
    for arr in pictures:
        lab = rgb_to_lab(arr[::stride, ::stride]).reshape(-1, 3)
        total += lab.sum(0)
        sq += (lab * lab).sum(0)
        n += lab.shape[0]
    if n == 0:
        raise ConfigError("colour transfer: a style has no training pictures")
    mean = total / n
    return mean, np.sqrt(np.maximum(sq / n - mean * mean, 1e-12))


def colour_transfer(arr: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The picture's own l-alpha-beta statistics moved to (mean, std), channel by channel."""
    lab = rgb_to_lab(arr)
    mu = lab.reshape(-1, 3).mean(0)
    sd = lab.reshape(-1, 3).std(0)
    return lab_to_rgb((lab - mu) / np.maximum(sd, 1e-6) * std + mean)


# -- measures --------------------------------------------------------------------------------
def luma_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the BT.601 luminance of two (H, W, 3) uint8 pictures (Gaussian window)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)

    def y(arr: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.ascontiguousarray(arr)).double() @ w)[None, None]

    return float(ssim(y(a), y(b), data_range=255.0)[0])


def view_crops(model: GANModel, arr: np.ndarray) -> torch.Tensor:
    """(K, 3, R, R) uint8: the crops `style_view` reads of an (H, W, 3) picture."""
    pic = Picture(array=arr, sha256="", label="picture")
    x = style_view(model, pic, "cpu")  # (K, 3, R, R) in [-1, 1]
    return x.add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def split_rows(packed: PackedCrops, which: str, domain: int) -> list[int]:
    """Rows of one style on one side of the fixed split (`PackedDataset.split`'s rule:
    held-out file stems), without copying the pictures."""
    held = heldout_stems(packed.files)
    want = which == "heldout"
    return [i for i, f in enumerate(packed.files)
            if int(packed.labels[i]) == domain and (PurePosixPath(f).stem in held) == want]


def held_out_pictures(packed: PackedCrops, domain: int, n: int, long_side: int,
                      seed: int) -> list[tuple[str, np.ndarray]]:
    """Up to n held-out pictures of one style: (file, (H, W, 3) uint8), seeded order."""
    rows = split_rows(packed, "heldout", domain)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    out = []
    for j in order[:n]:
        arr = packed.picture(rows[j]).permute(1, 2, 0).numpy()
        if max(arr.shape[:2]) > long_side:
            arr = resize_long_side(arr, long_side)
        out.append((packed.files[rows[j]], np.ascontiguousarray(arr)))
    return out


def style_statistics(packed: PackedCrops, domains: list[int], limit: int,
                     seed: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Reinhard target statistics of each style, from its training pictures."""
    out = {}
    for d in domains:
        rows = split_rows(packed, "train", d)
        g = torch.Generator().manual_seed(seed + d)
        pick = [rows[j] for j in torch.randperm(len(rows), generator=g)[:limit].tolist()]
        out[d] = lab_stats([packed.picture(i).permute(1, 2, 0).numpy() for i in pick])
        log.info("colour statistics of %s from %d training pictures", packed.domains[d],
                 len(pick))
    return out


def measure(args: argparse.Namespace, model: GANModel, packed: PackedCrops,
            ev: OfflineEvaluator) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One record per (source picture, target style, method); and the grid's pictures."""
    names = list(model.style_names)
    domain_of = {name: packed.domains.index(name) for name in names}
    sources = names if args.sources == "all" else [args.sources]
    stats = style_statistics(packed, [domain_of[s] for s in names], args.ct_pictures,
                             args.seed)
    eval_index = {name: ev.styles.index(name) for name in names}
    records: list[dict[str, Any]] = []
    grid: dict[str, Any] = {"rows": [], "targets": []}
    for src in sources:
        pictures = held_out_pictures(packed, domain_of[src], args.n, args.long_side, args.seed)
        targets = [t for t in names if t != src]
        log.info("%s: %d held-out pictures -> %s", src, len(pictures), ", ".join(targets))
        for i, (file, arr) in enumerate(pictures):
            r = Restyler(model)
            r.set_image(arr)
            crops_in = view_crops(model, arr)
            feats_in = ev.features(crops_in)
            row_cells: dict[str, np.ndarray] = {}
            for tgt in targets:
                outs = {
                    "GAN": r.render(tgt, seed=args.seed + i).array,
                    "colour transfer": colour_transfer(arr, *stats[domain_of[tgt]]),
                    "identity": arr,
                }
                for method, out in outs.items():
                    if out.shape != arr.shape:
                        raise ConfigError(f"{method} gave {out.shape} for {arr.shape}")
                    crops = crops_in if method == "identity" else view_crops(model, out)
                    probs = ev.classify(crops).mean(0)
                    feats = feats_in if method == "identity" else ev.features(crops)
                    records.append({
                        "source_style": src, "target": tgt, "method": method, "file": file,
                        "hit": int(probs.argmax()) == eval_index[tgt],
                        "p_target": float(probs[eval_index[tgt]]),
                        "ssim": 1.0 if method == "identity" else luma_ssim(arr, out),
                        "feat": float((feats - feats_in).double().norm(dim=1).mean()),
                        "width": arr.shape[1], "height": arr.shape[0],
                    })
                row_cells[f"{tgt}|GAN"] = outs["GAN"]
                row_cells[f"{tgt}|colour transfer"] = outs["colour transfer"]
            if src == args.grid_source and i < args.grid_rows:
                grid["rows"].append((file, arr, row_cells))
                grid["targets"] = targets
            if (i + 1) % 10 == 0:
                log.info("%s: %d/%d pictures", src, i + 1, len(pictures))
    real = real_accuracy(args, model, packed, ev, names, domain_of, eval_index)
    return records, {"grid": grid, "real": real}


def real_accuracy(args: argparse.Namespace, model: GANModel, packed: PackedCrops,
                  ev: OfflineEvaluator, names: list[str], domain_of: dict[str, int],
                  eval_index: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The evaluator on held-out pictures of each style itself (same crops, same rule)."""
    out = {}
    for name in names:
        pics = held_out_pictures(packed, domain_of[name], args.n, args.long_side, args.seed)
        hits = [int(ev.classify(view_crops(model, a)).mean(0).argmax()) == eval_index[name]
                for _, a in pics]
        out[name] = {"accuracy": float(np.mean(hits)) if hits else None, "n": len(hits)}
    return out


def summarise(records: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    """Means per (target, method) and overall per method (over all pairs)."""
    def agg(rs: list[dict[str, Any]]) -> dict[str, Any]:
        if not rs:
            return {"n": 0, "style_accuracy": None, "p_target": None, "ssim": None, "feat": None}
        return {"n": len(rs), "style_accuracy": float(np.mean([r["hit"] for r in rs])),
                "p_target": float(np.mean([r["p_target"] for r in rs])),
                "ssim": float(np.mean([r["ssim"] for r in rs])),
                "feat": float(np.mean([r["feat"] for r in rs]))}

    out: dict[str, Any] = {"per_target": {}, "overall": {}}
    for m in METHODS:
        for t in targets:
            out["per_target"].setdefault(t, {})[m] = agg(
                [r for r in records if r["target"] == t and r["method"] == m])
        out["overall"][m] = agg([r for r in records if r["method"] == m])
    return out


# -- report ----------------------------------------------------------------------------------
def table(summary: dict[str, Any], real: dict[str, dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.1%}"

    def num(v: float | None, digits: int) -> str:
        return "" if v is None else f"{v:.{digits}f}"

    lines = ["| target style | method | style accuracy | p(target) | SSIM (luma) | "
             "feature distance | pairs |", "|---|---|---|---|---|---|---|"]
    groups = [(t, summary["per_target"][t]) for t in summary["per_target"]]
    groups.append(("**all**", summary["overall"]))
    for target, by_method in groups:
        for m in METHODS:
            a = by_method[m]
            if not a["n"]:
                continue
            lines.append(f"| {target} | {m} | {pct(a['style_accuracy'])} | "
                         f"{num(a['p_target'], 3)} | {num(a['ssim'], 3)} | "
                         f"{num(a['feat'], 3)} | {a['n']} |")
        rr = real.get(target)
        if rr and rr["n"]:
            lines.append(f"| {target} | real held-out pictures of the style | "
                         f"{pct(rr['accuracy'])} | | | | {rr['n']} |")
    return "\n".join(lines)


def grid_image(grid: dict[str, Any], ct_style: str, cell: int) -> np.ndarray:
    """Rows = source pictures; columns = source, GAN per target style, colour transfer."""
    cols = [("source", None)] + [(f"{t} (GAN)", f"{t}|GAN") for t in grid["targets"]]
    cols.append((f"{ct_style} (colour transfer)", f"{ct_style}|colour transfer"))
    font = ImageFont.load_default()
    head = 16
    width = len(cols) * (cell + PAD) + PAD
    height = head + PAD + len(grid["rows"]) * (cell + PAD) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, (title, _) in enumerate(cols):
        draw.text((PAD + c * (cell + PAD) + 2, PAD + 2), title, fill=TEXT, font=font)
    for r, (_, src, cells) in enumerate(grid["rows"]):
        y = head + PAD + r * (cell + PAD)
        for c, (_, key) in enumerate(cols):
            x = PAD + c * (cell + PAD)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=CELL_BACKGROUND)
            thumb = fit_cell(src if key is None else cells[key], cell)
            canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    return np.asarray(canvas)


# -- entry -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True,
                    help="a crops-mode translator: registered name[:version] or model dir")
    ap.add_argument("--dataset", required=True,
                    help="the dataset it was trained on (name[:version] or version dir)")
    ap.add_argument("--n", type=int, default=60, help="held-out pictures per source style")
    ap.add_argument("--from", dest="sources", default="photo",
                    help="source style, or 'all' for every style (default: photo)")
    ap.add_argument("--long-side", type=int, default=512,
                    help="cap on a picture's longer side (pixels)")
    ap.add_argument("--seed", type=int, default=0, help="picture order and GAN seeds")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--evaluator-steps", type=int, default=None,
                    help="steps if the crops evaluator has to be trained (default: 1500)")
    ap.add_argument("--ct-pictures", type=int, default=200,
                    help="training pictures per style for the colour-transfer statistics")
    ap.add_argument("--ct-style", default=None,
                    help="the grid's colour-transfer column (default: the first target)")
    ap.add_argument("--json", type=Path, default=OUT_DIR / "photo_quality.json")
    ap.add_argument("--md", type=Path, default=OUT_DIR / "photo_quality.md")
    ap.add_argument("--grid", type=Path, default=OUT_DIR / "photo_styles_grid.png")
    ap.add_argument("--grid-rows", type=int, default=5, help="held-out photos in the grid")
    ap.add_argument("--cell", type=int, default=256, help="grid cell side (pixels)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.n < 1 or args.long_side < 16 or args.cell < 16 or args.grid_rows < 0:
        raise ConfigError("--n must be >= 1, --long-side and --cell >= 16, --grid-rows >= 0")
    model = load_model(args.model)
    if not is_native(model):
        raise ConfigError(f"{args.model} is not a crops-mode translator (meta fit "
                          f"{model.meta.get('fit')!r}): this benchmark restyles pictures at "
                          "their own size")
    trained_split = training_split(model)
    if trained_split is not None and trained_split != "train":
        log.warning("the model was trained on split %r: the held-out pictures were seen in "
                    "training", trained_split)
    dataset_dir = resolve_dataset_dir(args.dataset)
    ds_name, ds_version = dataset_identity(dataset_dir)
    crop = int(model.meta.get("crop") or model.config.resolution)
    packed = load_packed(dataset_dir, crop, "crops", scale=model.meta.get("scale"))
    names = list(model.style_names)
    missing = [s for s in names if s not in packed.domains]
    if missing:
        raise ConfigError(f"the dataset {ds_name}:{ds_version} has no style folder for "
                          f"{', '.join(missing)} (it has {', '.join(packed.domains)}): is it "
                          "the one the model was trained on?")
    if args.sources != "all" and args.sources not in names:
        raise ConfigError(f"--from {args.sources!r}: the model's styles are {', '.join(names)}")
    if args.sources != "all":
        args.grid_source = args.sources
    else:
        args.grid_source = "photo" if "photo" in names else names[0]
    ct_style = args.ct_style or next(t for t in names if t != args.grid_source)
    if ct_style not in names or ct_style == args.grid_source:
        raise ConfigError(f"--ct-style {ct_style!r}: one of the model's styles other than "
                          f"the grid's source style {args.grid_source} "
                          f"({', '.join(names)})")
    ev = get_offline_evaluator(dataset_dir, crop, scale=packed.scale, steps=args.evaluator_steps)
    log.info("crops evaluator %s (%d steps)", ev.name, ev.config.steps)
    if [s for s in names if s not in ev.styles]:
        raise ConfigError(f"the crops evaluator knows {', '.join(ev.styles)}, not all of "
                          f"{', '.join(names)}")
    records, extra = measure(args, model, packed, ev)
    if not records:
        raise ConfigError(f"the held-out split of {ds_name}:{ds_version} has no pictures of "
                          f"the source style(s) {args.sources}")
    summary = summarise(records, names)
    summary["per_target"] = {t: v for t, v in summary["per_target"].items()
                             if any(m["n"] for m in v.values())}
    n_src = len({(r["source_style"], r["file"]) for r in records})
    ref = getattr(model, "model_ref", None)
    label = f"{ref.name}:{ref.version}" if ref is not None and ref.name else args.model
    header = (f"{label} on held-out pictures of "
              f"{ds_name}:{ds_version}: {n_src} source pictures "
              f"({'every style' if args.sources == 'all' else args.sources}), longer side "
              f"<= {args.long_side} px, restyled into every other style. Style accuracy: "
              f"evaluator {ev.name} ({ev.config.steps} steps; accuracy on random crops of "
              f"held-out pictures {ev.stats.get('val_style_accuracy', float('nan')):.1%}) "
              f"on 5 crops per "
              f"picture; colour transfer = Reinhard et al. 2001 to each style's training "
              f"statistics; identity = the input unchanged.")
    text = header + "\n\n" + table(summary, extra["real"]) + "\n"
    report = {**run_facts(), "model": label, "dataset": f"{ds_name}:{ds_version}",
              "crop": crop, "scale": list(packed.scale), "sources": args.sources,
              "n_source_pictures": n_src, "long_side": args.long_side, "seed": args.seed,
              "trained_split": trained_split, "seconds": round(time.perf_counter() - t0, 1),
              "evaluator": {"name": ev.name, **ev.stats}, "summary": summary,
              "real": extra["real"], "records": records}
    atomic_write_json(args.json, report)
    atomic_write_text(args.md, text)
    written = [args.json, args.md]
    if args.grid_rows and extra["grid"]["rows"]:
        png = grid_image(extra["grid"], ct_style, args.cell)
        atomic_write_bytes(args.grid, encode_png(png))
        written.append(args.grid)
    print(text)
    print(f"written: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
