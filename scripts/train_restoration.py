#!/usr/bin/env python3
"""The recipe for the bundled restoration models (polychrome/assets/models/<name>/).

  photo-sr        pix2pix sr, x2 and x4 in one network      scripts/defaults/photo-sr.yaml
  photo-inpaint   pix2pix inpaint                           scripts/defaults/photo-inpaint.yaml
  photo-colorize  pix2pix colorize                          scripts/defaults/photo-colorize.yaml
  emoji-sr        pix2pix sr on the emoji styles at 128 px  scripts/defaults/emoji-sr.yaml

Steps, each a plain command:

  1. build the photographs (Debian packages and PyPI wheels; credits in PHOTOS/CREDITS.md)
     and the emoji at 128 px:
       python3 scripts/data/photos.py PHOTOS
       python3 ../shared/datasets/emoji_styles.py EMOJI --size 128   (the emoji recipe)
  2. import them:
       polychrome data import PHOTOS/train --name photos
       polychrome data import EMOJI --name emoji128
  3. train (checkpointed; `polychrome train --resume RUNS/<name>` continues a run):
       OMP_NUM_THREADS=1 polychrome train --config scripts/defaults/photo-sr.yaml \\
           --dataset photos --steps 2400 --run-dir RUNS/photo-sr --name photo-sr
       (photo-inpaint and photo-colorize alike with --steps 2000; emoji-sr with
        --dataset emoji128 --steps 1500). The bundled photo-sr was stopped at step 1,887
        and continued on two threads to a 4,200-step schedule:
       OMP_NUM_THREADS=2 polychrome train --resume RUNS/photo-sr --steps 4200
  4. export the EMA generator of each run into the package:
       python scripts/train_restoration.py export RUNS/photo-sr       (and the others)
  5. measure them on the held-out photos (quality against the classical baselines, speed):
       python benchmarks/restoration.py --heldout PHOTOS/heldout --train PHOTOS/train \\
           --readme README.md
       python benchmarks/restoration.py --tasks sr --sr src/polychrome/assets/models/emoji-sr \\
           --dataset emoji128 --limit 200 --no-speed --json docs/quality/emoji_sr.json \\
           --md docs/quality/emoji_sr.md --grid-dir docs/restoration/emoji
  6. write metrics.json and card.md from those JSON outputs and the runs:
       python scripts/train_restoration.py card RUNS/photo-sr --credits PHOTOS/CREDITS.md
       (and the others; emoji-sr with --quality docs/quality/emoji_sr.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from render_docs import empty_block  # this folder (scripts)
from train_defaults import export_run, fill_card, train_facts

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "polychrome" / "assets" / "models"
QUALITY = REPO / "docs" / "quality"
EMOJI_CREDITS = (
    "# Credits\n\nTraining data: the emoji styles set built by `emoji_styles.py` from npm "
    "packages, rendered at 128 px: Google Noto Emoji (Apache-2.0), Twemoji (CC-BY-4.0), "
    "OpenMoji colour and line (CC-BY-SA-4.0), Microsoft Fluent UI Emoji flat (MIT). The "
    "drawings belong to their authors; these weights were trained from scratch by "
    "Polychrome.")
TASK_TEXT = {
    "sr": "Makes a picture larger and sharper (super-resolution)",
    "inpaint": "Fills in the parts of a picture a mask marks (inpainting); every pixel "
               "outside the mask is kept exactly",
    "colorize": "Gives a black-and-white picture colours (colorization); the picture's "
                "brightness (BT.601 luma) is kept",
}


def _norm_text(cfg: dict) -> str:
    norm = cfg["norm"] if cfg["norm"] != "auto" else ("none" if cfg["task"] == "sr"
                                                      else "instance")
    return "no normalisation" if norm == "none" else "instance norm"


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _quality_lines(task: str, res: dict, report: dict) -> tuple[list[str], dict]:
    s = res["summary"]
    n = report["n_photos"]
    lines: list[str] = []
    figures: dict = {}
    if task == "sr":
        lines += [f"On {n} held-out pictures at their own size, made smaller by the "
                  "antialiased bicubic downscale (8-bit), luma (BT.601) PSNR / SSIM with a "
                  "border of s pixels cropped:", "",
                  "| scale | ours PSNR | bicubic | Lanczos | gain over bicubic | ours SSIM | "
                  "bicubic | Lanczos |", "|---|---|---|---|---|---|---|---|"]
        for sc in res["scales"]:
            b = s[f"x{sc}"]
            m = b["methods"]
            lines.append(f"| x{sc} | {_f(m['ours']['psnr_y'])} dB | {_f(m['bicubic']['psnr_y'])} "
                         f"| {_f(m['lanczos']['psnr_y'])} | {b['gain_db']:+.2f} dB | "
                         f"{_f(m['ours']['ssim_y'], 4)} | {_f(m['bicubic']['ssim_y'], 4)} | "
                         f"{_f(m['lanczos']['ssim_y'], 4)} |")
            figures[f"x{sc}"] = {k: m[k] for k in m} | {"gain_db": b["gain_db"]}
    elif task == "inpaint":
        m = s["methods"]
        lines += [f"On {n} held-out photos at their own size, one free-form mask each (strokes "
                  f"and boxes; mean {s.get('mask_fraction', 0):.0%} of the picture), inside "
                  "the holes (RGB):", "",
                  "| method | PSNR | L1 (0-255) |", "|---|---|---|",
                  f"| photo-inpaint | {_f(m['ours']['psnr_mask'])} dB | "
                  f"{_f(m['ours']['l1_mask'])} |",
                  f"| harmonic (Laplace) fill | {_f(m['harmonic']['psnr_mask'])} dB | "
                  f"{_f(m['harmonic']['l1_mask'])} |",
                  f"| pyramid fill | {_f(m['pyramid']['psnr_mask'])} dB | "
                  f"{_f(m['pyramid']['l1_mask'])} |"]
        figures = {k: m[k] for k in m} | {"gain_db": s["gain_db"]}
    else:
        m = s["methods"]
        lines += [f"On {n} held-out photos at their own size, from their luma:", "",
                  "| method | a*b* error | colourfulness |", "|---|---|---|",
                  f"| photo-colorize | {_f(m['ours']['ab_error'])} | "
                  f"{_f(m['ours']['colourfulness'])} |",
                  f"| mean chroma | {_f(m['mean chroma']['ab_error'])} | "
                  f"{_f(m['mean chroma'].get('colourfulness'))} |",
                  f"| grey input | {_f(m['grey']['ab_error'])} | 0.00 |",
                  f"| the real photos | 0 | {_f(s.get('truth_colourfulness'))} |", "",
                  f"Largest change of luma: {s['luma_max_diff']:.2f} (of 255)."]
        figures = {k: m[k] for k in m} | {"colourfulness_ratio": s.get("colourfulness_ratio"),
                                          "luma_max_diff": s["luma_max_diff"]}
    goals = [f"- {name}: {g['goal']}: {_f(g['value'], 3)} "
             f"({'met' if g['met'] else '**not met**'})" for name, g in res["goals"].items()]
    if goals:
        lines += ["", "Goals:", "", *goals]
    return lines, figures


def _task_limits(task: str, res: dict) -> list[str]:
    """What the measured figures say the model does not do (read from them, not typed)."""
    s = res["summary"]
    missed = [name for name, g in res["goals"].items() if not g["met"]]
    out = []
    if task == "sr":
        gains = ", ".join(f"x{sc} {s[f'x{sc}']['gain_db']:+.2f} dB" for sc in res["scales"])
        out.append(f"- Gains over bicubic: {gains}; it sharpens edges, it does not invent "
                   "fine detail (texture stays soft).")
    elif task == "inpaint":
        m = s["methods"]
        out.append(f"- In the holes it is {m['ours']['psnr_mask'] - m['harmonic']['psnr_mask']:+.2f}"
                   f" dB from the harmonic fill and {m['ours']['psnr_mask'] - m['pyramid']['psnr_mask']:+.2f}"
                   " dB from the pyramid fill it starts from: on holes this large it gives a "
                   "blurred fill, with blocky traces of its coarsest level; thin strokes fare "
                   "better than boxes.")
    else:
        m = s["methods"]
        out.append(f"- Its colours are faint (colourfulness {s['colourfulness_ratio']:.2f} of the "
                   f"real photos') and often of the wrong hue: a*b* error "
                   f"{m['ours']['ab_error']:.2f} against {m['mean chroma']['ab_error']:.2f} for "
                   f"mean chroma and {m['grey']['ab_error']:.2f} for leaving it grey.")
    if missed:
        out.append(f"- Goals not met: {'; '.join(missed)}.")
    return out


def _card_report(model_dir: Path) -> tuple[Path, dict, str, dict]:
    """(quality JSON path, its report, the model's task, the model's config.json meta), from
    the benchmark JSON its metrics.json names."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    quality_path = REPO / str(metrics["source"]).split("(", 1)[1].rstrip(")")
    spec = json.loads((model_dir / "config.json").read_text())
    return quality_path, json.loads(quality_path.read_text()), spec["config"]["task"], \
        spec.get("meta", {})


def measured_lines(model_dir: Path) -> list[str]:
    """The card's measured figures (quality against the baselines, goals, speed)."""
    quality_path, report, task, _ = _card_report(model_dir)
    lines, _ = _quality_lines(task, report["tasks"][task], report)
    speed = [r for r in report.get("speed") or [] if r["task"] == task]
    if speed:
        m = report["machine"]
        lines += ["", f"Speed, decode + restore + PNG encode of a ~1 megapixel result, p50 of "
                  f"{speed[0]['repeats']} runs on {m['cpu']} ({m['threads']} threads): "
                  + ", ".join(f"{('x' + str(r['scale'])) if task == 'sr' else task} "
                              f"{r['p50_s']:.2f} s" for r in speed) + "."]
    return lines


def limit_lines(model_dir: Path) -> list[str]:
    """What the measured figures say the model does not do, and what they rest on."""
    quality_path, report, task, meta = _card_report(model_dir)
    return [*_task_limits(task, report["tasks"][task]),
            "- Trained from scratch on "
            f"{'28 photographs' if 'photo' in str(meta.get('dataset')) else 'one data set'}; "
            "textures it never saw come out smooth.",
            *(["- Held-out pictures are the data set's held-out split (whole emoji of the "
               "same five styles), so the figures say how it enlarges emoji, not photos."]
              if "emoji" in str(meta.get("dataset")) else []),
            f"- {report['n_photos']} held-out pictures (per-picture figures in "
            f"{quality_path.with_suffix('.md').relative_to(REPO)})."]


def card(run_dir: Path, dest: Path, quality_path: Path, credits: Path | None) -> None:
    report = json.loads(quality_path.read_text())
    spec = json.loads((dest / "config.json").read_text())
    cfg, meta = spec["config"], spec.get("meta", {})
    task = cfg["task"]
    res = report["tasks"][task]
    facts = train_facts(run_dir)
    _, figures = _quality_lines(task, res, report)
    speed = [r for r in report.get("speed") or [] if r["task"] == task]
    metrics = {
        "source": f"benchmarks/restoration.py ({quality_path.relative_to(REPO)})",
        "commit": report.get("commit"), "held_out_pictures": report["n_photos"],
        "task": task, "figures": figures,
        "goals": {k: {"value": g["value"], "met": g["met"]} for k, g in res["goals"].items()},
        "p50_seconds_1mp": {(f"x{r['scale']}" if task == "sr" else task): r["p50_s"]
                            for r in speed},
    }
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    tc = facts["cfg"]
    crop = tc.get("crop") or tc.get("resolution")
    how = (f"random {crop} px crops of pictures scaled to a shorter side of "
           f"{tc['scale'][0]}-{tc['scale'][1]} px" if tc.get("fit") == "crops"
           else f"whole pictures at {tc['resolution']} px")
    opts = tc.get("trainer_options") or {}
    scales = ", ".join(f"x{s}" for s in cfg["scales"]) if task == "sr" else None
    lines = [
        f"# {dest.name}", "", f"{TASK_TEXT[task]}" + (f": {scales}." if scales else "."),
        "It works at the picture's own size (tiled above the memory budget).", "",
        f"- architecture: `pix2pix` (restoration, task {task}): U-Net with {cfg['n_down']} "
        f"stride-2 levels, {cfg['width']} channels at half resolution (at most "
        f"{cfg['max_width']}), {cfg['n_blocks']} residual blocks at the bottom, "
        f"{_norm_text(cfg)}; conditional PatchGAN discriminator during training",
        f"- loss: L1 x {opts.get('lambda_l1', 100)} + adversarial x "
        f"{opts.get('lambda_adv', 1)} ({tc['loss']})"
        + (f"; inputs degraded '{opts['degrade']}'" if task == "sr" and "degrade" in opts
           else ""),
        f"- trained on {how}; dataset {meta.get('dataset')}",
        empty_block("run"), "",
        "## Recipe", "", "`scripts/train_restoration.py` (data, import, train, export, measure, "
        "this card).", "",
        "## Measured (benchmarks/restoration.py)", "", empty_block("measured"), "",
        "## Limitations", "", empty_block("limits"), ""]
    text = None
    if credits is not None and credits.is_file():
        text = credits.read_text().strip()
    elif "emoji" in str(meta.get("dataset")):
        text = EMOJI_CREDITS
    if text:
        text = text.replace("\n## ", "\n#### ").replace("# ", "### ", 1)
        lines += ["## Training data and credits", "", text, ""]
    (dest / "card.md").write_text("\n".join(lines))
    fill_card(run_dir, dest)  # the figures blocks: run record, measured, limits
    print(f"wrote {dest / 'card.md'} and metrics.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("export", help="the run's EMA generator into the package")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dest", type=Path, default=None, help="default: assets/models/<run name>")
    p = sub.add_parser("card", help="metrics.json and card.md from the benchmark's JSON")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dest", type=Path, default=None)
    p.add_argument("--quality", type=Path, default=QUALITY / "restoration.json")
    p.add_argument("--credits", type=Path, default=None)
    args = ap.parse_args(argv)
    dest = args.dest or ASSETS / args.run_dir.resolve().name
    if args.cmd == "export":
        export_run(args.run_dir, dest)
    else:
        card(args.run_dir, dest, args.quality.resolve(), args.credits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
