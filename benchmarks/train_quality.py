"""Quality for a fixed CPU budget: each noise model trained from scratch, FID at step 0 vs the end.

    python benchmarks/train_quality.py [--dataset emoji] [--minutes 15] [--models dcgan,sngan]
        [--runs-dir DIR] [--out DIR] [--eval-n 2000] [--threads 2] [--resolution 32]
        [--seed 0] [--clock wall|cpu] [--evaluator-steps N]

For each model (default: the six noise -> image models) on an imported dataset:
1. step 0: the model exactly as the run starts it (the loop seeds torch with the run seed,
   then builds the model; done here the same way), evaluated with the dataset's saved
   offline evaluator (`polychrome.metrics.evaluate_generator`, FID + KID, `--eval-n`
   samples against every real image, latents from `--seed`);
2. `polychrome.training.train()` with the model's defaults (train_defaults), a practically
   unlimited `steps`, no periodic samples / checkpoints / evaluation, and a budget stop on
   the loop's `should_stop` hook (wall clock, or this process's CPU time with --clock cpu,
   counted from the first step, so setup is not charged); the loop checkpoints when it stops;
3. end: the run's EMA generator (exported from that checkpoint, as `polychrome train`
   does) evaluated the same way.

Writes to --out: train_quality.json (rewritten after each model, so a long job keeps what
it finished), train_quality.md (the table, also printed) and samples.png (one block per
model: the same latents at step 0 | at the end, one row per style). Run dirs (with the
exported model under <run>/model) stay in --runs-dir. Figures, never pass/fail.

The offline evaluator belongs to the dataset version: trained once (about 2 minutes on 2
cores at 32 px) if the dataset has none yet, then reused, so numbers compare across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import run_script
from PIL import Image, ImageDraw

from polychrome.data.cache import PackedDataset, load_cache_dir, resolve_dataset_dir
from polychrome.errors import ConfigError, PolychromeError
from polychrome.metrics import evaluate_generator, get_offline_evaluator
from polychrome.metrics.evaluator import dataset_identity
from polychrome.models import create_model, get_model_class, list_models
from polychrome.models.base import GANModel
from polychrome.sampling import iter_samples
from polychrome.settings import get_settings
from polychrome.training import TrainConfig, export_model, train
from polychrome.training.budget import TimeBudget
from polychrome.training.checkpoint import load_checkpoint
from polychrome.training.monitor import tile_images
from polychrome.training.runs import check_new_run_dir, model_kwargs
from polychrome.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("train_quality")

GRID_COLS = 8
GRID_MAX_ROWS = 8  # styles shown per block (unconditional models: this many rows of samples)


def step0_model(cfg: TrainConfig, packed: PackedDataset) -> GANModel:
    """The weights the run starts from: the loop seeds torch with the run seed, then builds."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **model_kwargs(cfg, packed.num_domains))
    model.meta["styles"] = list(packed.domains)  # labels drawn in the data's proportions
    return model.eval()


def measure(model: GANModel, packed: PackedDataset, extractor: Any, dataset_dir: Path,
            n: int, seed: int) -> dict[str, float]:
    result = evaluate_generator(model, packed, metrics=("fid", "kid"), n=n, extractor=extractor,
                                seed=seed, dataset=dataset_dir)
    return {k: float(v) for k, v in result["metrics"].items()}


def sample_grid(model: GANModel, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: GRID_COLS latents per row, one row per style (up to GRID_MAX_ROWS)."""
    k = int(model.config.num_domains)
    rows = min(k, GRID_MAX_ROWS) if k > 1 else GRID_MAX_ROWS // 2
    labels = torch.arange(rows).repeat_interleave(GRID_COLS) if k > 1 else None
    images = torch.cat(list(iter_samples(model, rows * GRID_COLS, seed=seed, labels=labels)))
    return tile_images(images.float() / 127.5 - 1.0, GRID_COLS)  # uint8 -> [-1, 1] -> grid


def combined_png(blocks: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """One block per model: a caption line, then step-0 samples | final samples."""
    gap, caption_h = 12, 14
    parts = []
    for caption, before, after in blocks:
        h = max(before.shape[0], after.shape[0])
        w = before.shape[1] + gap + after.shape[1]
        block = Image.new("RGB", (w, caption_h + h), (255, 255, 255))
        ImageDraw.Draw(block).text((2, 1), caption, fill=(0, 0, 0))
        block.paste(Image.fromarray(before), (0, caption_h))
        block.paste(Image.fromarray(after), (before.shape[1] + gap, caption_h))
        parts.append(block)
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height + gap for p in parts)), (255, 255, 255))
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height + gap
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def run_model(name: str, args: argparse.Namespace, packed: PackedDataset, extractor: Any,
              dataset_dir: Path, runs_dir: Path) -> tuple[dict[str, Any], tuple | None]:
    """Train one model for the budget; its table row and sample block (None on failure)."""
    cfg = TrainConfig(model=name, dataset=args.dataset, resolution=args.resolution,
                      steps=10**9, seed=args.seed, checkpoint_every=0, sample_every=0,
                      eval_every=0)
    row: dict[str, Any] = {"model": name}
    model0 = step0_model(cfg, packed)
    t0 = time.perf_counter()
    m0 = measure(model0, packed, extractor, dataset_dir, args.eval_n, args.seed)
    row.update(fid_0=m0["fid"], kid_0=m0["kid_mean"], eval_seconds=time.perf_counter() - t0)
    log.info("%s step 0: FID %.2f, KID %.4f", name, m0["fid"], m0["kid_mean"])
    grid0 = sample_grid(model0, args.seed)
    del model0
    budget = TimeBudget(args.minutes * 60, args.clock, name=name, logger=log)
    run_dir = runs_dir / name
    try:
        result = train(cfg, run_dir=run_dir, should_stop=budget)
    except PolychromeError as e:  # e.g. a loss went NaN: keep the other models' results
        row["error"] = str(e)
        log.error("%s: %s", name, e)
        return row, None
    wall, cpu = budget.used()
    _, state = load_checkpoint(result.checkpoint)
    model = GANModel.from_pretrained(export_model(run_dir, run_dir / "model")).eval()
    t0 = time.perf_counter()
    m1 = measure(model, packed, extractor, dataset_dir, args.eval_n, args.seed)
    row.update(steps=result.step, images_seen=int(state["images_seen"]),
               minutes=wall / 60, cpu_minutes=cpu / 60, img_s=result.images_per_second,
               fid_end=m1["fid"], kid_end=m1["kid_mean"], kid_end_std=m1["kid_std"],
               fid_ratio=m0["fid"] / max(m1["fid"], 1e-9),
               batch_size=int(state["config"]["batch_size"]), run_dir=str(run_dir),
               eval_seconds=row["eval_seconds"] + time.perf_counter() - t0)
    log.info("%s: %d steps in %.1f min: FID %.2f -> %.2f", name, result.step, wall / 60,
             m0["fid"], m1["fid"])
    spent = cpu if args.clock == "cpu" else wall
    caption = (f"{name}: step 0 (FID {m0['fid']:.1f})  |  step {result.step}, "
               f"{spent / 60:.1f} {args.clock}-min (FID {m1['fid']:.1f})")
    return row, (caption, grid0, sample_grid(model, args.seed))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | steps | images seen | CPU min | wall min | FID step 0 | FID end "
             "| FID0 / FIDend | KID end |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} | | | | "
                         f"{r.get('fid_0', float('nan')):.2f} | | | |")
            continue
        lines.append(f"| {r['model']} | {r['steps']} | {r['images_seen']} "
                     f"| {r['cpu_minutes']:.1f} | {r['minutes']:.1f} "
                     f"| {r['fid_0']:.2f} | {r['fid_end']:.2f} | {r['fid_ratio']:.1f}x "
                     f"| {r['kid_end']:.4f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="emoji", help="an imported dataset (name[:version])")
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per model")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="what the budget counts: wall clock or this process's CPU time")
    ap.add_argument("--models", default="", help="comma-separated (default: all noise models)")
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="one run dir per model goes here (default: a new dir under the "
                         "home's runs/)")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default: --runs-dir)")
    ap.add_argument("--eval-n", type=int, default=2000, help="generated samples per evaluation")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="run seed and evaluation latents")
    ap.add_argument("--evaluator-steps", type=int, default=None,
                    help="training steps of the offline evaluator IF the dataset has none yet "
                         "(default: the library's; a saved one is always reused)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.eval_n < 2:
        raise ConfigError("--minutes must be > 0 and --eval-n at least 2")
    names = [m.strip() for m in args.models.split(",") if m.strip()] or list_models("noise")
    for name in names:
        if get_model_class(name).family != "noise":
            raise ConfigError(f"{name} is a {get_model_class(name).family} model; FID of "
                              "samples from noise needs a noise model")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    runs_dir = args.runs_dir or get_settings().runs_dir / f"quality-{stamp}"
    out = args.out or runs_dir
    for name in names:  # fail now, not after an hour of training
        check_new_run_dir(runs_dir / name)
    dataset_dir = resolve_dataset_dir(args.dataset)
    ds_name, ds_version = dataset_identity(dataset_dir)
    packed = load_cache_dir(dataset_dir, args.resolution, "crop")
    extractor = get_offline_evaluator(dataset_dir, args.resolution, steps=args.evaluator_steps)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "dataset": f"{ds_name}:{ds_version}", "images": len(packed), "styles": packed.domains,
        "resolution": args.resolution, "extractor": extractor.name, "eval_n": args.eval_n,
        "seed": args.seed, "budget_minutes": args.minutes, "clock": args.clock,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "runs_dir": str(runs_dir), "models": [],
    }
    blocks = []
    for name in names:
        log.info("== %s: %.1f %s-minutes on %s", name, args.minutes, args.clock, report["dataset"])
        row, block = run_model(name, args, packed, extractor, dataset_dir, runs_dir)
        report["models"].append(row)
        if block is not None:
            blocks.append(block)
            atomic_write_bytes(out / "samples.png", combined_png(blocks))
        atomic_write_json(out / "train_quality.json", report)
    table = markdown_table(report["models"])
    header = (f"{report['dataset']} ({len(packed)} images, {len(packed.domains)} styles), "
              f"{args.resolution} px, {args.minutes:g} {args.clock}-min per model, "
              f"{report['threads']} threads; FID/KID: {extractor.name}, n={args.eval_n}, "
              f"seed {args.seed}")
    atomic_write_text(out / "train_quality.md", header + "\n\n" + table + "\n")
    print(header)
    print()
    print(table)
    print(f"\nwritten: {out / 'train_quality.json'}, {out / 'train_quality.md'}, "
          f"{out / 'samples.png'}", file=sys.stderr)
    return 0 if all("error" not in r for r in report["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
