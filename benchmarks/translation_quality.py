"""StarGAN on a style set with aligned file names, trained within a CPU budget, measured.

    python benchmarks/translation_quality.py [--dataset emoji] [--minutes 45] [--clock cpu]
        [--config scripts/defaults/emoji-stargan.yaml] [--steps N] [--threads 2] [--seed 1]
        [--runs-dir DIR] [--name RUN] [--out DIR] [--pairs 2000] [--measure RUN_DIR]

1. trains `stargan` from scratch with the default model's recipe (the YAML config, its
   schedule of --steps) on the dataset's `train` split, stopping early if the budget
   (--minutes of wall clock, or of this process's CPU time with --clock cpu) runs out;
   the loop checkpoints when it stops;
2. exports the EMA networks and measures them with the same code as `polychrome eval`
   (offline evaluator) on the fixed held-out split (file names never trained on): paired
   pixel L1 / SSIM / feature distance against the real drawing in the target style, next
   to the identity baseline (the untranslated source), style accuracy, diversity;
3. writes to --out: translation_quality.json, translation_quality.md (the table, also
   printed) and translation_grid.png: a row of held-out sources, one row per style
   (latent-guided) and one row restyled like a held-out reference picture.

Targets printed beside the figures are the platform's acceptance bar: style accuracy
>= 80 %, paired L1 at least 25 % below the identity baseline, diversity > 0.
Figures, not pass/fail: the exit code is 0 whenever the run and the measurement finish.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import run_script
from PIL import Image

from polychrome.data.cache import PackedDataset, load_cache_dir, resolve_dataset_dir
from polychrome.errors import ConfigError
from polychrome.metrics.evaluator import dataset_identity
from polychrome.metrics.translation import evaluate_translation
from polychrome.models.base import GANModel
from polychrome.pipelines.showcase import restyle_grid
from polychrome.settings import get_settings
from polychrome.training import TrainConfig, export_model, load_yaml_config, train
from polychrome.training.budget import CLOCKS, TimeBudget
from polychrome.training.runs import check_new_run_dir, read_run_config
from polychrome.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("translation_quality")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "scripts" / "defaults" / "emoji-stargan.yaml"
GRID_COLS = 8


def grid_pictures(packed: PackedDataset, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """GRID_COLS held-out sources (styles taken in turn) and one held-out reference of
    another emoji, all (R, R, 3) uint8."""
    held = packed.split("heldout")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(held), generator=g).tolist()
    by_style: dict[int, list[int]] = {}
    for i in order:
        by_style.setdefault(int(held.labels[i]), []).append(i)
    styles = sorted(by_style)
    picks = [by_style[styles[k % len(styles)]][k // len(styles)] for k in range(GRID_COLS)]
    ref = next(i for i in order if i not in picks)

    def arr(i: int) -> np.ndarray:
        return held.images[i].permute(1, 2, 0).numpy()

    return [arr(i) for i in picks], arr(ref)


def table(t: dict[str, Any]) -> str:
    ratio = t["paired_l1"] / t["identity_l1"]
    rows = [
        ("style accuracy (latent-guided)", f"{t['style_accuracy']:.1%}",
         f"{t['identity_style_accuracy']:.1%}", ">= 80 %"),
        ("style accuracy (reference-guided)", f"{t['style_accuracy_ref']:.1%}", "", ""),
        ("paired L1 (pixels, 0..1)", f"{t['paired_l1']:.4f}", f"{t['identity_l1']:.4f}",
         f"<= {0.75 * t['identity_l1']:.4f} (0.75 x identity); measured {ratio:.2f} x"),
        ("paired L1, reference-guided", f"{t['paired_l1_ref']:.4f}", f"{t['identity_l1']:.4f}",
         ""),
        ("paired SSIM", f"{t['paired_ssim']:.4f}", f"{t['identity_ssim']:.4f}", ""),
        ("paired feature distance", f"{t['paired_feat']:.3f}", f"{t['identity_feat']:.3f}", ""),
        ("diversity (L1 between seeds)", f"{t['diversity_l1']:.4f}", "", "> 0"),
    ]
    lines = ["| metric | translated | identity baseline | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="emoji", help="an imported dataset (name[:version])")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                    help="training config YAML (default: the bundled model's recipe)")
    ap.add_argument("--steps", type=int, default=None, help="schedule length (default: config)")
    ap.add_argument("--minutes", type=float, default=45.0, help="training budget")
    ap.add_argument("--clock", choices=CLOCKS, default="cpu",
                    help="what the budget counts: wall clock or this process's CPU time")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1, help="run seed")
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="the run dir goes here (default: a new dir under the home's runs/)")
    ap.add_argument("--name", default=None,
                    help="the run dir's name (default: translation-quality-<UTC time>)")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default: the run dir)")
    ap.add_argument("--pairs", type=int, default=2000, help="held-out pairs measured")
    ap.add_argument("--measure", type=Path, default=None, metavar="RUN_DIR",
                    help="do not train: measure this earlier run's latest checkpoint (and "
                         "write its grid)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.pairs < 1:
        raise ConfigError("--minutes must be > 0 and --pairs at least 1")
    if args.measure is not None:  # an earlier run: measure its latest checkpoint again
        run_dir = args.measure
        cfg, _ = read_run_config(run_dir)
        facts = json.loads((run_dir / "budget.json").read_text()) \
            if (run_dir / "budget.json").is_file() else {}
    else:
        raw = load_yaml_config(args.config)
        overrides = {"steps": args.steps} if args.steps else {}
        cfg = TrainConfig.from_dict({**raw, "model": "stargan", "dataset": args.dataset,
                                     "resolution": args.resolution, "seed": args.seed,
                                     **overrides})
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = (args.runs_dir or get_settings().runs_dir) / (
            args.name or f"translation-quality-{stamp}")
        check_new_run_dir(run_dir)
        budget = TimeBudget(args.minutes * 60, args.clock, name="stargan", logger=log)
        result = train(cfg, run_dir=run_dir, should_stop=budget)
        wall, cpu = budget.used()
        facts = {"steps": result.step, "stopped_by_budget": bool(result.stopped),
                 "budget_minutes": args.minutes, "clock": args.clock,
                 "wall_minutes": round(wall / 60, 2), "cpu_minutes": round(cpu / 60, 2),
                 "threads": torch.get_num_threads()}
        atomic_write_json(run_dir / "budget.json", facts)  # kept for --measure
        log.info("trained %d steps in %.1f wall-min (%.1f CPU-min)", result.step, wall / 60,
                 cpu / 60)
    out = args.out or run_dir
    dataset_dir = resolve_dataset_dir(cfg.dataset)
    ds_name, ds_version = dataset_identity(dataset_dir)
    packed = load_cache_dir(dataset_dir, cfg.resolution, cfg.fit)
    model = GANModel.from_pretrained(export_model(run_dir, run_dir / "model")).eval()
    step = int(model.meta.get("step", 0))
    measured = evaluate_translation(model, packed, dataset_dir=dataset_dir,
                                    dataset_label=f"{ds_name}:{ds_version}", record=False,
                                    max_pairs=args.pairs)
    t = measured["translation"]
    sources, reference = grid_pictures(packed, int(cfg.seed))
    out.mkdir(parents=True, exist_ok=True)
    grid = restyle_grid(model, sources, seed=0, reference=reference)
    atomic_write_bytes(out / "translation_grid.png", _png(grid))
    if facts.get("steps") != step:  # trained further since the budget run
        facts = {"note": f"budget facts are for step {facts.get('steps')}"} if facts else {}
    report = {"dataset": f"{ds_name}:{ds_version}", "config": str(args.config),
              "steps": step, "planned_steps": int(cfg.steps), **facts,
              "torch": torch.__version__, "run_dir": str(run_dir),
              "extractor": measured["extractor"], "translation": t}
    atomic_write_json(out / "translation_quality.json", report)
    spent = (f"{facts['cpu_minutes']:.1f} CPU-min / {facts['wall_minutes']:.1f} wall-min, "
             f"{facts['threads']} threads" if "cpu_minutes" in facts else "time not recorded")
    header = (f"stargan on {report['dataset']} ({len(packed.domains)} styles, "
              f"{cfg.resolution} px): {step} of {cfg.steps} steps in {spent}; held-out "
              f"split, {t['n_pairs']} pairs, extractor {measured['extractor']}")
    text = header + "\n\n" + table(t) + "\n"
    atomic_write_text(out / "translation_quality.md", text)
    print(text)
    print(f"written: {out / 'translation_quality.md'}, {out / 'translation_grid.png'}",
          file=sys.stderr)
    return 0


def _png(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
