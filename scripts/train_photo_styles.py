#!/usr/bin/env python3
"""The recipe for the bundled `photo-styles` model (polychrome/assets/models/photo-styles/).

A StarGAN v2-style translator trained in crops mode, so it restyles photographs at their
own size. Steps, each a plain command:

  1. build the picture collection from Debian packages and PyPI wheels (credits in DATA):
       python3 scripts/data/photo_styles.py DATA
  2. import it:
       polychrome data import DATA --name photo-styles
  3. train (checkpointed; `polychrome train --resume RUNS/photo-styles` continues it):
       OMP_NUM_THREADS=1 polychrome train stargan --dataset photo-styles \\
           --config scripts/defaults/photo-styles.yaml --steps 4000 --seed 1 \\
           --run-dir RUNS/photo-styles --name photo-styles
  4. export the EMA networks into the package:
       python scripts/train_photo_styles.py export RUNS/photo-styles
  5. measure them (held-out pictures; speed and memory at 0.25 / 1 / 12 megapixels):
       python benchmarks/photo_quality.py --model src/polychrome/assets/models/photo-styles \\
           --dataset photo-styles
       python benchmarks/native_size.py --model src/polychrome/assets/models/photo-styles
  6. write metrics.json and card.md from those JSON outputs:
       python scripts/train_photo_styles.py card RUNS/photo-styles --credits DATA/CREDITS.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from render_docs import empty_block  # this folder (scripts)
from train_defaults import export_run, fill_card, train_facts

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / "src" / "polychrome" / "assets" / "models" / "photo-styles"
QUALITY = REPO / "docs" / "quality"


def _train_facts(run_dir: Path) -> dict:
    """train_defaults' facts of the run, with the crops settings and seed of its config."""
    facts = train_facts(run_dir)
    cfg = facts["cfg"]
    return {**facts, "crop": cfg["crop"], "scale": cfg["scale"], "seed": cfg["seed"]}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _figures() -> tuple[dict, dict, dict]:
    """(photo_quality.json, native_size.json, the card's metrics.json) from the benchmarks."""
    quality = json.loads((QUALITY / "photo_quality.json").read_text())
    speed = json.loads((QUALITY / "native_size.json").read_text())
    overall = quality["summary"]["overall"]
    timing = {f"{r['megapixels']:g} MP": r["p50_s"] for r in speed.get("timing", [])}
    psnr = [r for r in speed.get("psnr", []) if r.get("stats") == "whole"]
    metrics = {
        "source": "benchmarks/photo_quality.py, benchmarks/native_size.py "
                  "(docs/quality/photo_quality.json, native_size.json)",
        "commit": quality.get("commit"),
        "held_out_pairs": overall["GAN"]["n"],
        "style_accuracy": {m: overall[m]["style_accuracy"] for m in overall},
        "ssim_luma": {m: overall[m]["ssim"] for m in overall},
        "p50_seconds": timing,
        "peak_rss_mib_12mp": (speed.get("rss") or {}).get("restyle_mib"),
        "tiled_vs_whole_psnr_db": psnr[0]["psnr_db"] if psnr else None,
    }
    return quality, speed, metrics


def measured_lines(model_dir: Path | None = None) -> list[str]:
    """The card's measured figures: style accuracy and content kept, speed and memory."""
    quality, speed, metrics = _figures()
    overall = quality["summary"]["overall"]
    gan, ct, ident = overall["GAN"], overall.get("colour transfer", {}), overall["identity"]
    lines = [
        f"On {gan['n']} held-out (picture, target style) pairs, by `benchmarks/photo_quality.py` "
        "(style accuracy: an offline classifier trained on crops of the training split; "
        "content: SSIM of the luminance between input and output):", "",
        "| method | style accuracy | SSIM (luma) |", "|---|---|---|",
        f"| photo-styles | {_pct(gan['style_accuracy'])} | {gan['ssim']:.3f} |",
    ]
    if ct:
        lines.append(f"| colour transfer (Reinhard) | {_pct(ct['style_accuracy'])} | "
                     f"{ct['ssim']:.3f} |")
    return [*lines, f"| identity | {_pct(ident['style_accuracy'])} | {ident['ssim']:.3f} |", "",
            "Speed and memory by `benchmarks/native_size.py` "
            f"({speed['machine']['threads']} threads, {speed['machine']['cpu']}): p50 "
            + ", ".join(f"{k} {v:.2f} s" for k, v in metrics["p50_seconds"].items())
            + (f"; peak RSS restyling 4000 x 3000: {metrics['peak_rss_mib_12mp']:.0f} MiB"
               if metrics["peak_rss_mib_12mp"] else "")
            + (f"; tiled vs whole PSNR {metrics['tiled_vs_whole_psnr_db']:.1f} dB"
               if metrics["tiled_vs_whole_psnr_db"] else "") + "."]


def limit_lines(model_dir: Path | None = None) -> list[str]:
    """What the instrument and the figures say the model does not do."""
    quality, _, _ = _figures()
    weak = [f"{t} ({_pct(r['accuracy'])})" for t, r in quality.get("real", {}).items()
            if r.get("accuracy") is not None and r["accuracy"] < 0.5]
    return [f"- The classifier that measures style accuracy recognises the style of "
            f"held-out crops {quality['evaluator'].get('val_style_accuracy', 0):.0%} of the "
            "time, so the figures are coarse.",
            f"- Styles it cannot recognise on real held-out pictures of the style itself: "
            f"{', '.join(weak) if weak else 'none'}; translations into them are not measured "
            "by it." if weak else "- Every style is recognised on real held-out pictures.",
            "- The styles it draws are mild: content is kept (high SSIM) and the colours and "
            "textures move toward the target, but a photo does not become a drawing.",
            *_eval_refusal()]


def _eval_refusal() -> list[str]:
    """`polychrome eval`'s instrument on this model (scripts/eval_bundled.py), when it refused."""
    path = REPO / "docs" / "quality" / "bundled_eval.json"
    entry = json.loads(path.read_text()).get("models", {}).get("photo-styles", {}) \
        if path.is_file() else {}
    if entry.get("status") != "refused" or not entry.get("attempts"):
        return []
    last = entry["attempts"][-1]
    reason = last["refused"].split("measure them: ", 1)[-1].split(". To get", 1)[0]
    return [f"- `polychrome eval`'s instrument refuses to measure this model: its evaluator "
            f"(trained on crops of this data set) {reason.removeprefix('it ')} "
            "(`scripts/eval_bundled.py`, "
            "`docs/quality/bundled_eval.json`). The table above comes from the benchmark's own "
            "classifier, with the weaknesses said here."]


def card(run_dir: Path, dest: Path, credits: Path | None) -> None:
    _, _, metrics = _figures()
    spec = json.loads((dest / "config.json").read_text())
    facts = _train_facts(run_dir)
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    cfg = spec["config"]
    meta = spec.get("meta", {})
    lines = [
        "# photo-styles", "",
        "Restyles a photograph (or any picture) at its own size into one of "
        f"{len(meta.get('styles', []))} styles: {', '.join(meta.get('styles', []))}.", "",
        f"- architecture: `stargan` (translation), {cfg['width']} channels at full resolution, "
        f"{cfg['n_down']} downsamplings, U-Net skips at {cfg['skips']} levels",
        f"- trained in crops mode: random {facts['crop']} px crops of pictures scaled to a "
        f"shorter side of {facts['scale'][0]}-{facts['scale'][1]} px; runs fully "
        "convolutionally on the whole picture (tiled above the memory budget)",
        f"- dataset: {meta.get('dataset')} (train split; the held-out pictures were never seen)",
        empty_block("run"),
        "", "## Recipe", "", "See `scripts/train_photo_styles.py` (data, import, train, "
        "export, measure, this card).", "",
        "## Measured", "", empty_block("measured"), "",
        "## Seed diversity", "", empty_block("seed-diversity"), "",
        "## Limitations", "", empty_block("limits"), ""]
    if credits is not None and credits.is_file():
        text = credits.read_text().strip().replace("\n## ", "\n#### ").replace("# ", "### ", 1)
        lines += ["## Training data and credits", "", text, ""]
    (dest / "card.md").write_text("\n".join(lines))
    fill_card(run_dir, dest)  # the figures blocks: run, measured, seed diversity, limits
    print(f"wrote {dest / 'card.md'} and metrics.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("export", help="the run's EMA networks into the package")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dest", type=Path, default=DEST)
    p = sub.add_parser("card", help="metrics.json and card.md from the benchmarks' JSON")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dest", type=Path, default=DEST)
    p.add_argument("--credits", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "export":
        export_run(args.run_dir, args.dest)
    else:
        card(args.run_dir, args.dest, args.credits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
