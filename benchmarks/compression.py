"""Compressed inference: ONNX Runtime, int8 quantisation and structured pruning vs PyTorch.

For each bundled model (src/polychrome/assets/models/) and each variant:

  torch-fp32          the model as the pipelines run it (the reference)
  onnx-fp32           the exported graphs through ONNX Runtime (`--runtime onnx`)
  onnx-int8-dynamic   int8 weights, activations quantised per call
  onnx-int8-static    int8 weights and activations, ranges calibrated beforehand
  torch-pruned        `--prune` of every prunable hidden channel set removed (pix2pix,
                      CycleGAN; no fine-tuning), run by PyTorch

it records the speed ratio against torch-fp32 (the same inputs, each a batch of one as the
pipelines run them; variants interleaved over `--repeats` rounds in a rotating order after
one untimed warm-up each; the same intra-op threads for torch and ONNX Runtime, one by
default as the API runs them; median seconds per pass), the size on disk of the networks (the safetensors file; the .onnx
files; the pruned networks' float32 weights) and the quality delta: PSNR of the uint8
picture against torch-fp32's uint8 picture, and for the restoration models PSNR against
the ground truth (the clean picture) beside torch-fp32's own.

Inputs, drawn the way the pipelines draw them: noise models one latent per seed 0..7
(`sample_z` from a seeded CPU generator) with the styles in turn; image models the bundled
example pictures (src/polychrome/assets/examples/, not the models' training sets): emoji
at the model's size, crops of the photo at their own size. StarGAN's style codes come from
its mapping network (seeded latents, styles in turn). sr models get the picture shrunk by
their largest factor (antialiased bicubic) and are scored against the picture itself;
inpainting gets seeded free-form hole masks; colorize the picture's luma. int8-static is
calibrated on other inputs of the same kind: latents from another seed, and the other half
of the example pictures (other emoji; other crops of the photo).

    python benchmarks/compression.py [--json] [--models NAME ...] [--repeats 5]
        [--prune 0.25] [--threads 1] [--out docs/quality/compression.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import run_facts, run_script

from polychrome.imageio import decode_image
from polychrome.models.base import WEIGHTS_NAME, GANModel
from polychrome.sampling import to_uint8
from polychrome.utils.atomic import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "polychrome" / "assets"
VARIANTS = ("torch-fp32", "onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "torch-pruned")
README_BEGIN = "<!-- compression-figures: rendered from docs/quality/compression.json -->"
README_END = "<!-- /compression-figures -->"
# A variant may become a default only if every model keeps this PSNR against torch-fp32
# (about one uint8 step of error on average) and is faster; checked, not assumed.
DEFAULT_BAR_DB = 40.0

Item = tuple[Callable[[GANModel], torch.Tensor], torch.Tensor | None]  # (call, ground truth)


# -- inputs ---------------------------------------------------------------------------------
def _picture(path: Path) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] from a bundled example."""
    arr = decode_image(path.read_bytes())  # (H, W, 3) uint8
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def _emoji() -> list[torch.Tensor]:
    ex = ASSETS / "examples"
    return [_picture(p) for p in sorted(ex.glob("source-noto-*.png"))] + \
        [_picture(p) for p in sorted(ex.glob("reference-*.png"))]


def _photo_crops(h: int, w: int) -> list[torch.Tensor]:
    photo = _picture(ASSETS / "examples" / "photo-chelsea.png")
    H, W = photo.shape[-2:]
    return [photo[:, :, t:t + h, left:left + w] for t in (0, H - h) for left in (0, W - w)]


def _halves(pictures: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(evaluated, calibration): alternate pictures, so the two never share one."""
    return pictures[0::2], pictures[1::2]


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=(side, side), mode="bicubic",
                                           antialias=True, align_corners=False).clamp(-1, 1)


def workload(model: GANModel, name: str) -> tuple[list[Item], list[torch.Tensor]]:
    """(items to run, calibration pictures for int8-static)."""
    cfg = model.config
    photo = name.startswith("photo")
    if model.family == "noise":
        items = []
        for seed in range(8):
            z = model.sample_z(1, generator=torch.Generator().manual_seed(seed), device="cpu")
            y = torch.tensor([seed % cfg.num_domains]) if cfg.num_domains > 1 else None
            items.append((lambda m, z=z, y=y: m.generator(z, y, noise_mode="const"), None))
        return items, []
    if model.name == "stargan":
        pics = _photo_crops(128, 192) if photo else [_resize(p, cfg.resolution) for p in _emoji()]
        evaluated, calib = _halves(pics)
        items = []
        for i, x in enumerate(evaluated):
            z = model.sample_z(1, generator=torch.Generator().manual_seed(i), device="cpu")
            y = i % cfg.num_domains
            items.append((lambda m, x=x, z=z, y=y: m.generator(x, m.style_from_latent(z, y)),
                          None))
        return items, calib
    task, s = cfg.task, max(model.generator.scales)
    pics = _photo_crops(128, 192) if photo else _emoji()
    evaluated, calib = _halves(pics)
    if task == "sr":
        from polychrome.data.degrade import downscale

        return ([(lambda m, lr=downscale(hr, s): m.generator(lr, s), hr) for hr in evaluated],
                [downscale(hr, s) for hr in calib])
    if task == "inpaint":
        from polychrome.data.degrade import random_masks

        items = []
        for i, x in enumerate(evaluated):
            mask = random_masks(1, *x.shape[-2:], torch.Generator().manual_seed(i))
            items.append((lambda m, x=x, mask=mask: m.generator(m.prepare(x, mask)), x))
        return items, calib
    return [(lambda m, x=x: m.generator(m.prepare(x)), x) for x in evaluated], calib


# -- variants -------------------------------------------------------------------------------
def _load(name: str) -> GANModel:
    return GANModel.from_pretrained(ASSETS / "models" / name).eval()


def _weights_bytes(net_owner: GANModel) -> int:
    return sum(t.numel() * t.element_size() for n in net_owner.inference_modules
               for t in getattr(net_owner, n).state_dict().values())


def build_variants(name: str, cache: Path, prune: float, threads: int
                   ) -> tuple[dict[str, GANModel], dict[str, dict[str, Any]]]:
    """{variant: loaded model} and {variant: facts (size, build seconds, notes)}."""
    from polychrome.runtime import use_runtime
    from polychrome.runtime.prune import PRUNABLE, prune_model
    from polychrome.runtime.quantize import calibration_feeds

    ref = _load(name)
    models: dict[str, GANModel] = {"torch-fp32": ref}
    facts: dict[str, dict[str, Any]] = {
        "torch-fp32": {"bytes": (ASSETS / "models" / name / WEIGHTS_NAME).stat().st_size}}
    _, calib_pictures = workload(ref, name)
    calibration = calibration_feeds(ref, calib_pictures, seed=1)
    for variant in ("fp32", "int8-dynamic", "int8-static"):
        t0 = time.perf_counter()
        m = use_runtime(_load(name), "onnx", variant=variant, cache_dir=cache, threads=threads,
                        calibration=calibration if variant == "int8-static" else None)
        graphs = {g.path for net in m.modules() for g in getattr(net, "graphs", {}).values()}
        models[f"onnx-{variant}"] = m
        facts[f"onnx-{variant}"] = {"bytes": sum(p.stat().st_size for p in graphs),
                                    "build_s": round(time.perf_counter() - t0, 1)}
    if ref.name in PRUNABLE:
        pruned = prune_model(ref, prune)
        models["torch-pruned"] = pruned
        facts["torch-pruned"] = {"bytes": _weights_bytes(pruned), "fraction": prune}
    else:
        facts["torch-pruned"] = {"note": f"not implemented for {ref.name} (pruning covers "
                                         f"{', '.join(PRUNABLE)})"}
    return models, facts


# -- measuring ------------------------------------------------------------------------------
def _run(model: GANModel, items: list[Item]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [to_uint8(call(model).float().clamp(-1, 1)) for call, _ in items]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR in dB of two uint8 pictures (None when identical)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return None if mse == 0 else round(10 * math.log10(255.0 ** 2 / mse), 2)


def _mean_psnr(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> float | None:
    values = [_psnr(a, b) for a, b in zip(outs, refs, strict=True)]
    if all(v is None for v in values):
        return None
    return round(statistics.mean(100.0 if v is None else v for v in values), 2)


def measure_model(name: str, repeats: int, prune: float, threads: int, cache: Path) -> dict:
    t0 = time.perf_counter()
    models, facts = build_variants(name, cache, prune, threads)
    items, _ = workload(models["torch-fp32"], name)
    truths = [to_uint8(gt) for _, gt in items] if items[0][1] is not None else None
    outputs = {v: _run(m, items) for v, m in models.items()}  # also the warm-up pass
    seconds: dict[str, list[float]] = {v: [] for v in models}
    order = list(models)
    for r in range(repeats):
        for v in order[r % len(order):] + order[:r % len(order)]:  # rotating order
            start = time.perf_counter()
            _run(models[v], items)
            seconds[v].append(time.perf_counter() - start)
    base = statistics.median(seconds["torch-fp32"])
    ref = outputs["torch-fp32"]
    rows = {}
    for v in VARIANTS:
        row: dict[str, Any] = dict(facts.get(v, {}))
        if v in models:
            med = statistics.median(seconds[v])
            diff = max(int((a.int() - b.int()).abs().max()) for a, b in
                       zip(outputs[v], ref, strict=True))
            row.update({"median_s": round(med, 5), "speedup": round(base / med, 2),
                        "size_ratio": round(row["bytes"] / facts["torch-fp32"]["bytes"], 3),
                        "psnr_vs_torch_db": _mean_psnr(outputs[v], ref),
                        "max_uint8_diff": diff})
            if truths is not None:
                row["psnr_vs_truth_db"] = _mean_psnr(outputs[v], truths)
        rows[v] = row
    m = models["torch-fp32"]
    return {"model": name, "arch": m.name, "family": m.family, "items": len(items),
            "input": _describe(items, m), "variants": rows,
            "seconds": round(time.perf_counter() - t0, 1)}


def _describe(items: list[Item], model: GANModel) -> str:
    if model.family == "noise":
        return f"{len(items)} latents, batch of one"
    return f"{len(items)} example pictures, batch of one"


def bundled() -> list[str]:
    return sorted(d.name for d in (ASSETS / "models").iterdir() if (d / "config.json").is_file())


def defaults_verdict(results: list[dict]) -> dict[str, Any]:
    """Which variants could become a default: PSNR vs torch >= the bar and faster, everywhere."""
    out = {}
    for v in VARIANTS[1:]:
        rows = [r["variants"][v] for r in results if "median_s" in r["variants"][v]]
        ok = bool(rows) and all((row["psnr_vs_torch_db"] is None
                                 or row["psnr_vs_torch_db"] >= DEFAULT_BAR_DB)
                                and row["speedup"] > 1.0 for row in rows)
        out[v] = {"meets_bar": ok, "models": len(rows)}
    return {"bar_psnr_db": DEFAULT_BAR_DB, "variants": out}


# -- the README block -------------------------------------------------------------------------
def _cell_psnr(v: float | None) -> str:
    return "identical" if v is None else f"{v:.1f}"


def table(report: dict[str, Any]) -> str:
    lines = ["| model | variant | speed vs torch | size | PSNR vs torch (dB) | PSNR vs truth (dB) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in report["models"]:
        for v in VARIANTS:
            row = r["variants"][v]
            if "median_s" not in row:
                continue
            truth = row.get("psnr_vs_truth_db", "")
            truth = "" if truth == "" else _cell_psnr(truth)
            lines.append(f"| {r['model']} | {v} | {row['speedup']:.2f}x | "
                         f"{row['bytes'] / 1e6:.2f} MB | {_cell_psnr(row['psnr_vs_torch_db'])} "
                         f"| {truth} |")
    return "\n".join(lines)


def readme_table(report: dict[str, Any]) -> str:
    """README's compression block, from the benchmark's JSON."""
    mach, verdict = report["machine"], report["defaults"]
    good = [v for v, d in verdict["variants"].items() if d["meets_bar"]]
    lines = [README_BEGIN, "",
             f"Each bundled model's networks on the same inputs (batch of one, as the "
             f"pipelines run them), median of {report['repeats']} interleaved passes with "
             f"{mach['threads']} intra-op thread(s) for both runtimes; pruning removes "
             f"{report['prune_fraction']:.0%} of each prunable hidden channel set (pix2pix, "
             f"CycleGAN) without fine-tuning (`benchmarks/compression.py`, commit "
             f"{str(report.get('commit'))[:10]}; {mach['cores']} cores, {mach['cpu']}; load "
             f"average {mach.get('load_average_1m')} at the start).", "",
             table(report), ""]
    if (mach.get("load_average_1m") or 0) > mach["cores"]:
        lines += [f"The machine was shared (load average {mach['load_average_1m']} on "
                  f"{mach['cores']} cores): speed ratios of these short forwards move "
                  f"from run to run, sizes and PSNRs do not.", ""]
    lines += ["pix2pix sr's ONNX size counts one graph per trained scale, each holding the "
              "shared trunk. StyleGAN's modulated convolutions compute their weights per call "
              "and stay float in the int8 graphs.", "",
             f"A variant could become a default only where every model keeps PSNR >= "
             f"{verdict['bar_psnr_db']:g} dB against torch-fp32 and runs faster: "
             + (", ".join(good) if good else "none does") + ". torch-fp32 stays the default.",
             "", README_END]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    facts = run_facts()  # before the run: its commit, and the load it started under
    threads = torch.get_num_threads()
    results = []
    with tempfile.TemporaryDirectory(prefix="compression-") as tmp:
        for name in args.models:
            r = measure_model(name, args.repeats, args.prune, threads, Path(tmp))
            results.append(r)
            for v in VARIANTS:
                row = r["variants"][v]
                if "median_s" not in row:
                    print(f"{name} {v}: {row.get('note', 'not measured')}")
                    continue
                truth = (f", vs truth {_cell_psnr(row['psnr_vs_truth_db'])} dB"
                         if "psnr_vs_truth_db" in row else "")
                print(f"{name} {v}: {row['speedup']:.2f}x torch, {row['bytes'] / 1e6:.2f} MB, "
                      f"PSNR vs torch {_cell_psnr(row['psnr_vs_torch_db'])} dB{truth}")
    report = {**facts, "repeats": args.repeats, "prune_fraction": args.prune,
              "models": results, "defaults": defaults_verdict(results)}
    for v, d in report["defaults"]["variants"].items():
        print(f"{v}: {'meets' if d['meets_bar'] else 'misses'} the default bar "
              f"(PSNR >= {DEFAULT_BAR_DB:g} dB vs torch and faster on every model)")
    if args.json:
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Write the record to --out.")
    parser.add_argument("--models", nargs="+", default=bundled(), choices=bundled(),
                        help="Bundled models to measure (default: all).")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved timed passes.")
    parser.add_argument("--prune", type=float, default=0.25,
                        help="Fraction of each prunable hidden channel set removed.")
    parser.add_argument("--threads", type=int, default=1, help="Intra-op threads for torch "
                        "and ONNX Runtime alike (default 1, the API's inference_threads: on a "
                        "shared machine torch's spinning thread pool made its forwards 10x "
                        "slower at 2 threads).")
    parser.add_argument("--out", default=str(REPO / "docs" / "quality" / "compression.json"))
    sys.exit(run_script(main, parser.parse_args()))
