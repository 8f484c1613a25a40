"""The restoration models on held-out photos at their own size: figures vs classical baselines,
goals, speed, and sample grids.

    python benchmarks/restoration.py [--sr PATH] [--inpaint PATH] [--colorize PATH]
        [--tasks sr,inpaint,colorize] (--heldout PHOTOS/heldout | --dataset NAME [--limit N])
        [--train PHOTOS/train] [--mean-chroma A,B] [--seed 0] [--threads 2]
        [--repeats 5] [--speed-side 1024] [--no-speed] [--grid-photos NAME,NAME,NAME]
        [--crop 256]
        [--json docs/quality/restoration.json] [--md docs/quality/restoration.md]
        [--grid-dir docs/restoration]

Models default to the bundled ones (src/polychrome/assets/models/photo-sr, photo-inpaint,
photo-colorize); any model directory or registered name works. Photos: every picture in
--heldout (the photos data set's held-out folder, `scripts/data/photos.py`: photographs
no model trained on), each at its own size. Figures and baselines are those of
`polychrome.metrics.restoration` (the same code `polychrome eval` runs):

- sr, per factor the model has: Y-PSNR and Y-SSIM (BT.601 luma, border of s px cropped)
  of the model, PIL bicubic and PIL Lanczos on the photo made smaller by the antialiased
  bicubic downscale (training's clean mode, 8-bit);
- inpaint: PSNR and L1 inside one free-form mask per photo (`random_masks` drawn from a
  seed fixed by the photo's name and --seed) of the model, the harmonic fill and the
  pyramid fill;
- colorize (input: the BT.601 luma): ab error (CIE a*b*) of the model, "mean chroma"
  (every pixel the mean a*b* of the training photos in --train, recorded in the JSON)
  and grey; colourfulness (Hasler & Suesstrunk 2003) of the model vs the real photos;
  the largest luma change.

Goals: sr x2 >= +1.5 dB and x4 >= +1.0 dB mean Y-PSNR over bicubic; inpaint >= +2 dB mean
PSNR in the holes over the harmonic fill; colorize mean ab error below mean chroma's and
mean colourfulness within 25 % of the real photos'.

Speed (unless --no-speed): p50 / p90 seconds over --repeats runs (after one warm-up) of
decode + `pipelines.restore.restore` + PNG encode of an encoded file whose RESULT is
1024 x 1024 (about 1 MP; --speed-side): sr x2 from a 512 x 512 JPEG, x4 from 256 x 256,
inpaint and colorize at 1024 x 1024 (inpaint with a PNG mask); the input is the centre
square of the first grid photo, resized. Also the harmonic fill's own time at that size.

Writes the JSON (--json: command, commit, machine, every figure per photo), the Markdown
tables (--md, also printed) and the sample grids --grid-dir/{sr-x2,sr-x4,inpaint,
colorize}.jpg: one row per photo of --grid-photos (default: 3 held-out photos), a
--crop px region of the result (the most detailed one; for inpaint one with holes in it),
columns input (small inputs enlarged with nearest), baselines, ours, truth.
Exit code 0 whenever the measurement finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import run_facts, run_script
from PIL import Image, ImageDraw, ImageFont

from polychrome.errors import ConfigError
from polychrome.imageio import decode_image, encode_png
from polychrome.metrics import restoration as R
from polychrome.models.base import GANModel
from polychrome.persistence.models import load_model
from polychrome.pipelines.restore import require_restoration, restore
from polychrome.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from polychrome.utils.grid import BACKGROUND, CELL_BACKGROUND, PAD, TEXT

log = logging.getLogger("restoration")

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "src" / "polychrome" / "assets" / "models"
OUT_DIR = REPO / "docs" / "quality"
TASKS = ("sr", "inpaint", "colorize")
DEFAULT_MODELS = {"sr": BUNDLED / "photo-sr", "inpaint": BUNDLED / "photo-inpaint",
                  "colorize": BUNDLED / "photo-colorize"}
GRID_PHOTOS = ("plasma-summer-1am.jpg", "skimage-motorcycle-left.jpg", "sklearn-china.jpg")
SPEED_OUTPUT = 1024  # default side of the result timed (about 1 MP)
# Grid columns per task: (title, key in the case's pictures).
COLUMNS = {
    "sr": [("input (nearest)", "input"), ("bicubic", "bicubic"), ("lanczos", "lanczos"),
           ("ours", "ours"), ("truth", "truth")],
    "inpaint": [("input (holes white)", "input"), ("pyramid fill", "pyramid"),
                ("harmonic fill", "harmonic"), ("ours", "ours"), ("truth", "truth")],
    "colorize": [("input (luma)", "input"), ("mean chroma", "mean chroma"), ("ours", "ours"),
                 ("truth", "truth")],
}


# -- pictures for the grids -------------------------------------------------------------------
def _box_sums(values: np.ndarray, side: int, step: int) -> tuple[np.ndarray, list, list]:
    """Sums of `values` over side x side windows at a `step` grid -> (sums, tops, lefts)."""
    h, w = values.shape
    ii = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tops = list(range(0, max(1, h - side + 1), step)) or [0]
    lefts = list(range(0, max(1, w - side + 1), step)) or [0]
    t, left = np.array(tops)[:, None], np.array(lefts)[None, :]
    b, r = np.minimum(t + side, h), np.minimum(left + side, w)
    return ii[b, r] - ii[t, r] - ii[b, left] + ii[t, left], tops, lefts


def pick_region(truth: np.ndarray, side: int, holes: np.ndarray | None = None,
                multiple: int = 1) -> tuple[int, int]:
    """(top, left) of the side x side window with the most detail (sum of luma gradient
    magnitudes); with holes, among windows 15-60 % hole (else the holiest), detail in the
    holes counts. Multiples of `multiple` (the sr factor), so input crops align."""
    y = R.luma_y(truth)
    grad = np.zeros_like(y)
    grad[:, 1:] += np.abs(np.diff(y, axis=1))
    grad[1:, :] += np.abs(np.diff(y, axis=0))
    step = max(multiple, (side // 8) // multiple * multiple)
    if holes is None:
        score, tops, lefts = _box_sums(grad, side, step)
    else:
        h = holes.astype(np.float64)
        detail, tops, lefts = _box_sums(grad * h, side, step)
        frac, _, _ = _box_sums(h, side, step)
        frac /= side * side
        ok = (frac >= 0.15) & (frac <= 0.6)
        score = np.where(ok, detail, -1.0) if ok.any() else frac
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return tops[i], lefts[j]


def crop_case(task: str, record: dict[str, Any], pics: dict[str, np.ndarray],
              side: int) -> dict[str, np.ndarray]:
    """The grid's crops of one case: every column at side x side (inputs enlarged with
    nearest to the output's scale)."""
    truth = pics["truth"]
    side = min(side, *truth.shape[:2])
    s = int(record.get("scale", 1))
    top, left = pick_region(truth, side - side % s, pics.get("holes"), multiple=s)
    side -= side % s
    out = {}
    for _, key in COLUMNS[task]:
        arr = pics[key]
        if key == "input" and s > 1:
            small = arr[top // s:(top + side) // s, left // s:(left + side) // s]
            out[key] = np.repeat(np.repeat(small, s, axis=0), s, axis=1)
        else:
            out[key] = arr[top:top + side, left:left + side]
    return out


def grid_image(rows: list[tuple[str, dict[str, np.ndarray]]], columns: list[tuple[str, str]],
               cell: int) -> np.ndarray:
    """Rows = photos; columns = input, baselines, ours, truth (crops shown at 1:1)."""
    font = ImageFont.load_default()
    head = 16
    label_h = 14
    width = len(columns) * (cell + PAD) + PAD
    height = head + PAD + len(rows) * (cell + label_h + PAD) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, (title, _) in enumerate(columns):
        draw.text((PAD + c * (cell + PAD) + 2, PAD + 2), title, fill=TEXT, font=font)
    for r, (label, crops) in enumerate(rows):
        y = head + PAD + r * (cell + label_h + PAD)
        draw.text((PAD + 2, y), label, fill=TEXT, font=font)
        y += label_h
        for c, (_, key) in enumerate(columns):
            x = PAD + c * (cell + PAD)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=CELL_BACKGROUND)
            arr = crops[key]
            canvas.paste(Image.fromarray(np.ascontiguousarray(arr)), (x, y))
    return np.asarray(canvas)


def write_grid(path: Path, rows: list[tuple[str, dict[str, np.ndarray]]],
               columns: list[tuple[str, str]], cell: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(grid_image(rows, columns, cell)).save(buf, format="JPEG", quality=92)
    atomic_write_bytes(path, buf.getvalue())


# -- speed ------------------------------------------------------------------------------------
def centre_square(arr: np.ndarray, side: int) -> np.ndarray:
    """The centre square of a photo, resized (LANCZOS) to side x side."""
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(np.ascontiguousarray(arr[top:top + s, left:left + s]))
    return np.asarray(img.resize((side, side), Image.Resampling.LANCZOS))


def _encode_jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def time_restore(model: GANModel, task: str, photo: np.ndarray, scale: int, repeats: int,
                 seed: int, work: Path, output_side: int = SPEED_OUTPUT) -> dict[str, Any]:
    """p50 / p90 of decode + restore + PNG encode for an output_side-sided result."""
    side = output_side // scale
    arr = centre_square(photo, side)
    src = work / f"{task}-x{scale}.jpg"
    src.write_bytes(_encode_jpeg(arr))
    mask_path = None
    if task == "inpaint":
        holes = R.eval_mask("speed", side, side, seed)
        mask_path = work / "mask.png"
        mask_path.write_bytes(encode_png(np.repeat((holes * 255).astype(np.uint8)[..., None],
                                                   3, axis=2)))

    def once() -> tuple[float, float]:
        t0 = time.perf_counter()
        out = restore(model, src, scale=scale if task == "sr" else None, mask=mask_path)
        encode_png(out.array, out.metadata)
        return time.perf_counter() - t0, float(out.metadata["seconds"])

    once()  # warm-up
    totals, model_s = zip(*[once() for _ in range(repeats)], strict=True)
    row = {"task": task, "scale": scale, "input": f"{side}x{side}",
           "output": f"{side * scale}x{side * scale}", "input_format": "jpeg",
           "repeats": repeats, "p50_s": float(np.median(totals)),
           "p90_s": float(np.quantile(totals, 0.9)), "restore_p50_s": float(np.median(model_s))}
    if task == "inpaint":
        given = R.show_holes(arr, holes, (0, 0, 0))
        times = []
        for _ in range(min(repeats, 3)):
            t0 = time.perf_counter()
            R.harmonic_fill(given, holes)
            times.append(time.perf_counter() - t0)
        row["harmonic_fill_p50_s"] = float(np.median(times))
        row["mask_fraction"] = float(holes.mean())
    return row


# -- report -----------------------------------------------------------------------------------
def _f(v: float | None, digits: int = 2) -> str:
    return "inf" if v is None else f"{v:.{digits}f}"


def task_tables(task: str, res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    recs = res["records"]
    if task == "sr":
        for s in res["scales"]:
            blk = res["summary"][f"x{s}"]
            lines += [f"#### x{s}", "",
                      "| photo | size | ours Y-PSNR | bicubic | lanczos | gain over bicubic | "
                      "ours Y-SSIM | bicubic | lanczos |", "|---|---|---|---|---|---|---|---|---|"]
            for r in [r for r in recs if r["scale"] == s] + [{"file": "**mean**", **blk}]:
                m = r["methods"]
                size = f"{r['width']}x{r['height']}" if "width" in r else ""
                lines.append(
                    f"| {r['file']} | {size} | {_f(m['ours']['psnr_y'])} | "
                    f"{_f(m['bicubic']['psnr_y'])} | {_f(m['lanczos']['psnr_y'])} | "
                    f"{r['gain_db']:+.2f} | {_f(m['ours']['ssim_y'], 4)} | "
                    f"{_f(m['bicubic']['ssim_y'], 4)} | {_f(m['lanczos']['ssim_y'], 4)} |")
            lines.append("")
    elif task == "inpaint":
        lines += ["| photo | size | holes | ours PSNR | harmonic | pyramid | gain over harmonic | "
                  "ours L1 | harmonic | pyramid |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in recs + [{"file": "**mean**", **res["summary"]}]:
            m = r["methods"]
            size = f"{r['width']}x{r['height']}" if "width" in r else ""
            lines.append(
                f"| {r['file']} | {size} | {r['mask_fraction']:.1%} | "
                f"{_f(m['ours']['psnr_mask'])} | {_f(m['harmonic']['psnr_mask'])} | "
                f"{_f(m['pyramid']['psnr_mask'])} | {r['gain_db']:+.2f} | "
                f"{_f(m['ours']['l1_mask'])} | {_f(m['harmonic']['l1_mask'])} | "
                f"{_f(m['pyramid']['l1_mask'])} |")
        lines.append("")
    else:
        lines += ["| photo | size | ours ab error | mean chroma | grey | ours colourfulness | "
                  "real | ratio | max luma change |", "|---|---|---|---|---|---|---|---|---|"]
        s = res["summary"]
        mean_row = {"file": "**mean**", **s, "luma_max_diff": s["luma_max_diff"]}
        for r in recs + [mean_row]:
            m = r["methods"]
            size = f"{r['width']}x{r['height']}" if "width" in r else ""
            lines.append(
                f"| {r['file']} | {size} | {_f(m['ours']['ab_error'])} | "
                f"{_f(m['mean chroma']['ab_error'])} | {_f(m['grey']['ab_error'])} | "
                f"{_f(m['ours']['colourfulness'])} | {_f(r['truth_colourfulness'])} | "
                f"{_f(r['colourfulness_ratio'], 3)} | {r['luma_max_diff']:.2f} |")
        lines.append("")
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Restoration models on {report['n_photos']} held-out photos "
             f"({report['heldout']}), each at its own size; seed {report['seed']}. "
             "sr: Y = BT.601 luma in [0, 255], border of s px cropped, input made by the "
             "antialiased bicubic downscale (8-bit). inpaint: one free-form mask per photo, "
             "figures inside the holes on RGB. colorize: error in CIE a*b*."]
    if report.get("mean_ab"):
        a, b = report["mean_ab"]
        lines[0] += f" Mean chroma a*={a:.2f} b*={b:.2f} from {report['mean_ab_from']}."
    lines.append("")
    goal_rows = []
    for task, res in report["tasks"].items():
        lines += [f"### {task} ({report['models'][task]['label']})", ""]
        lines += task_tables(task, res)
        for name, g in res["goals"].items():
            target = g["target"]
            target = (f"{target[0]:g}-{target[1]:g}" if isinstance(target, list)
                      else f"{target:.2f}")
            goal_rows.append(f"| {task} | {name} | {g['goal']} | {_f(g['value'], 3)} | "
                             f"{target} | {'yes' if g['met'] else '**no**'} |")
    if goal_rows:
        lines += ["### goals", "", "| task | goal | wanted | value | target | met |",
                  "|---|---|---|---|---|---|", *goal_rows, ""]
    if report.get("speed"):
        lines += ["### speed (decode + restore + PNG encode)", "",
                  "| task | input | output | p50 s | p90 s | restore p50 s | runs |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["speed"]:
            name = f"sr x{r['scale']}" if r["task"] == "sr" else r["task"]
            lines.append(f"| {name} | {r['input']} {r['input_format']} | {r['output']} | "
                         f"{r['p50_s']:.2f} | {r['p90_s']:.2f} | {r['restore_p50_s']:.2f} | "
                         f"{r['repeats']} |")
        harm = [r for r in report["speed"] if "harmonic_fill_p50_s" in r]
        if harm:
            lines += ["", f"Harmonic fill baseline at {harm[0]['input']} "
                          f"({harm[0]['mask_fraction']:.0%} holes): "
                          f"{harm[0]['harmonic_fill_p50_s']:.2f} s."]
        m = report["machine"]
        lines += ["", f"Machine: {m['cpu']}, {m['threads']} torch threads, load average "
                      f"{m['load_average_1m']} at the start."]
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- restoration-figures: rendered from docs/quality/restoration.json -->"
README_END = "<!-- /restoration-figures -->"


def readme_table(report: dict[str, Any]) -> str:
    """The README's figures table, from the benchmark's JSON (tests check README has it)."""
    tasks, models = report["tasks"], report["models"]
    lines = [README_BEGIN, "",
             f"Held-out photos: {report['n_photos']}, each at its own size "
             f"(`benchmarks/restoration.py`, commit {str(report.get('commit'))[:10]}).", "",
             "| task | model | ours | classical baselines | goal | met |",
             "|---|---|---|---|---|---|"]
    if "sr" in tasks:
        res = tasks["sr"]
        for sc in res["scales"]:
            blk = res["summary"][f"x{sc}"]
            m = blk["methods"]
            g = res["goals"].get(f"x{sc} Y-PSNR gain over bicubic") or next(
                (v for k, v in res["goals"].items() if k.startswith(f"x{sc}")), None)
            lines.append(
                f"| sr x{sc} | `{models['sr']['label']}` | Y-PSNR {_f(m['ours']['psnr_y'])} dB, "
                f"SSIM {_f(m['ours']['ssim_y'], 3)} | bicubic {_f(m['bicubic']['psnr_y'])} dB / "
                f"{_f(m['bicubic']['ssim_y'], 3)}; Lanczos {_f(m['lanczos']['psnr_y'])} dB / "
                f"{_f(m['lanczos']['ssim_y'], 3)} | {g['goal'] if g else ''} over bicubic | "
                f"{_met(g)} ({blk['gain_db']:+.2f} dB) |")
    if "inpaint" in tasks:
        res = tasks["inpaint"]
        s, m = res["summary"], res["summary"]["methods"]
        g = next(iter(res["goals"].values()))
        lines.append(
            f"| inpaint | `{models['inpaint']['label']}` | PSNR in the holes "
            f"{_f(m['ours']['psnr_mask'])} dB, L1 {_f(m['ours']['l1_mask'])} | harmonic fill "
            f"{_f(m['harmonic']['psnr_mask'])} dB / {_f(m['harmonic']['l1_mask'])}; pyramid "
            f"fill {_f(m['pyramid']['psnr_mask'])} dB / {_f(m['pyramid']['l1_mask'])} | "
            f"{g['goal']} over harmonic | {_met(g)} ({s['gain_db']:+.2f} dB) |")
    if "colorize" in tasks:
        res = tasks["colorize"]
        s, m = res["summary"], res["summary"]["methods"]
        goals = list(res["goals"].values())
        lines.append(
            f"| colorize | `{models['colorize']['label']}` | Lab ab error "
            f"{_f(m['ours']['ab_error'])}, colourfulness {_f(m['ours']['colourfulness'], 1)} "
            f"(real {_f(s['truth_colourfulness'], 1)}) | mean chroma "
            f"{_f(m['mean chroma']['ab_error'])}; grey {_f(m['grey']['ab_error'])} | "
            f"error below mean chroma; colourfulness within 25 % | "
            + ", ".join(_met(g) for g in goals)
            + f" (ratio {_f(s['colourfulness_ratio'], 2)}) |")
    if report.get("speed"):
        mach = report["machine"]
        parts = [(f"sr x{r['scale']}" if r["task"] == "sr" else r["task"])
                 + f" {r['p50_s']:.2f} s" for r in report["speed"]]
        worst = max(r["p50_s"] for r in report["speed"])
        lines += ["", f"Speed, decode + restore + PNG encode of a ~1 MP result, p50 of "
                      f"{report['speed'][0]['repeats']} runs ({mach['threads']} threads, "
                      f"{mach['cpu']}): " + ", ".join(parts)
                  + f"; goal <= 2 s: {'met' if worst <= 2.0 else '**not met**'}."]
    lines += ["", README_END]
    return "\n".join(lines)


def update_readme(text: str, report: dict[str, Any]) -> str:
    """README text with its restoration figures block replaced by `readme_table(report)`."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ConfigError("README has no restoration figures block (its markers are missing)")
    return text[:start] + readme_table(report) + text[end + len(README_END):]


def _met(goal: dict[str, Any] | None) -> str:
    if goal is None:
        return ""
    return "yes" if goal["met"] else "**no**"


# -- entry ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for task in TASKS:
        ap.add_argument(f"--{task}", default=str(DEFAULT_MODELS[task]),
                        help=f"the {task} model: a model directory or registered name "
                             f"(default: the bundled {DEFAULT_MODELS[task].name})")
    ap.add_argument("--tasks", default=",".join(TASKS), help="which tasks to run")
    ap.add_argument("--heldout", type=Path, default=None,
                    help="folder of photos no model trained on (scripts/data/photos.py "
                         "writes PHOTOS/heldout)")
    ap.add_argument("--dataset", default=None,
                    help="instead of --heldout: the held-out split of an imported data set "
                         "(NAME or NAME:VERSION)")
    ap.add_argument("--limit", type=int, default=0,
                    help="with --dataset: every k-th held-out picture, at most this many")
    ap.add_argument("--train", type=Path, default=None,
                    help="the training photos (searched recursively): mean chroma for colorize "
                         "(scripts/data/photos.py writes PHOTOS/train)")
    ap.add_argument("--mean-chroma", default=None, metavar="A,B",
                    help="the mean-chroma baseline's a*,b* instead of computing it from --train")
    ap.add_argument("--seed", type=int, default=0, help="mask seed (inpaint)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per speed case")
    ap.add_argument("--speed-side", type=int, default=SPEED_OUTPUT,
                    help="side of the timed result in pixels (a multiple of 4)")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    ap.add_argument("--grid-photos", default=",".join(GRID_PHOTOS),
                    help="held-out photos in the grids (the first 3 if none of these exist)")
    ap.add_argument("--crop", type=int, default=256, help="grid crop side (pixels)")
    ap.add_argument("--json", type=Path, default=OUT_DIR / "restoration.json")
    ap.add_argument("--md", type=Path, default=OUT_DIR / "restoration.md")
    ap.add_argument("--grid-dir", type=Path, default=REPO / "docs" / "restoration")
    ap.add_argument("--readme", type=Path, default=None,
                    help="also re-render this README's restoration figures block from the "
                         "new JSON (README.md when the bundled models were measured)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _load(task: str, spec: str) -> tuple[GANModel, dict[str, Any]]:
    if not Path(spec).exists() and spec == str(DEFAULT_MODELS[task]):
        raise ConfigError(f"{spec} does not exist yet: train the bundled {task} model first, "
                          f"or pass --{task} PATH, or leave {task} out of --tasks")
    model = load_model(spec)
    own = require_restoration(model)
    if own != task:
        raise ConfigError(f"--{task} {spec} is a model for {own}, not {task}")
    ref = getattr(model, "model_ref", None)
    label = f"{ref.name}:{ref.version}" if ref is not None and ref.name else \
        Path(spec).name
    info = {"path": spec, "label": label, "step": model.meta.get("step"),
            "dataset": model.meta.get("dataset"), "config": dataclasses.asdict(model.config)}
    if task == "sr":
        info["scales"] = [int(s) for s in model.config.task_scales()]
    return model, info


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ConfigError(f"--tasks: choose from {', '.join(TASKS)}, got {args.tasks!r}")
    if args.repeats < 1 or args.crop < 16 or args.speed_side < 16 or args.speed_side % 4:
        raise ConfigError("--repeats must be >= 1, --crop >= 16 and --speed-side a multiple "
                          "of 4, >= 16")
    if (args.heldout is None) == (args.dataset is None):
        raise ConfigError("give the held-out pictures: --heldout DIR or --dataset NAME")
    if "colorize" in tasks and not args.mean_chroma and args.train is None:
        raise ConfigError("colorize's mean-chroma baseline needs --train DIR (or --mean-chroma "
                          "A,B)")
    models = {t: _load(t, getattr(args, t)) for t in tasks}
    if args.dataset is not None:
        from polychrome.data.cache import resolve_dataset_dir

        photos = R.dataset_pictures(resolve_dataset_dir(args.dataset), "heldout")
        if args.limit and len(photos) > args.limit:
            step = len(photos) / args.limit
            photos = [photos[int(i * step)] for i in range(args.limit)]
        args.heldout = f"{args.dataset} (held-out split, {len(photos)} pictures)"
    else:
        photos = R.folder_pictures(args.heldout)
    names = [n for n, _ in photos]
    wanted = [n for n in args.grid_photos.split(",") if n in names] or names[:3]
    report: dict[str, Any] = {**run_facts(), "heldout": str(args.heldout),
                              "n_photos": len(photos), "photos": names, "seed": args.seed,
                              "grid_photos": wanted, "models": {}, "tasks": {}}
    if "colorize" in tasks:
        if args.mean_chroma:
            try:
                mean_ab = tuple(float(v) for v in args.mean_chroma.split(","))
                assert len(mean_ab) == 2
            except (ValueError, AssertionError):
                raise ConfigError(f"--mean-chroma A,B: got {args.mean_chroma!r}") from None
            report["mean_ab_from"] = "given"
        else:
            files = R.picture_files(args.train, recursive=True)
            overlap = {p.name for p in files} & set(names)
            if overlap:
                log.warning("photos in both --train and --heldout: %s", ", ".join(overlap))
            mean_ab = R.mean_chroma(decode_image(p) for p in files)
            report["mean_ab_from"] = f"{args.train} ({len(files)} photos, every 2nd pixel)"
        report["mean_ab"] = list(mean_ab)
    written: list[Path] = []
    for task in tasks:
        model, info = models[task]
        report["models"][task] = info
        grids: dict[str, list[tuple[str, dict[str, np.ndarray]]]] = {}

        def keep(name: str, rec: dict[str, Any], pics: dict[str, np.ndarray],
                 task: str = task, grids: dict = grids) -> None:
            if name in wanted:
                key = f"sr-x{rec['scale']}" if task == "sr" else task
                grids.setdefault(key, []).append((name, crop_case(task, rec, pics, args.crop)))

        t_task = time.perf_counter()
        res = R.evaluate_restoration(model, photos, seed=args.seed, mean_ab=report.get("mean_ab"),
                                     on_case=keep)
        res["seconds"] = round(time.perf_counter() - t_task, 1)
        report["tasks"][task] = R.jsonable(res)
        for key, rows in grids.items():
            path = args.grid_dir / f"{key}.jpg"
            write_grid(path, rows, COLUMNS[task], min(args.crop, *(
                c["truth"].shape[0] for _, c in rows)))
            written.append(path)
        log.info("%s done in %.0f s", task, res["seconds"])
    if not args.no_speed:
        pick = dict(photos).get(wanted[0], photos[0][1])
        report["speed"] = []
        with tempfile.TemporaryDirectory() as tmp:
            for task in tasks:
                model, info = models[task]
                for s in (info.get("scales") or [1]):
                    row = time_restore(model, task, pick, s, args.repeats, args.seed, Path(tmp),
                                       args.speed_side)
                    log.info("speed %s x%d: p50 %.2f s", task, s, row["p50_s"])
                    report["speed"].append(row)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = markdown(report)
    atomic_write_json(args.json, report)
    atomic_write_text(args.md, text)
    if args.readme is not None:
        atomic_write_text(args.readme, update_readme(args.readme.read_text(), report))
    print(text)
    written = [args.json, args.md, *written]
    print(f"written: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
