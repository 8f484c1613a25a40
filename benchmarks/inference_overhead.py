"""Inference without overhead: batched restyle vs one at a time, CLI generate vs in-process.

In one run, side by side:

1. restyle N distinct pictures with a bundled translator, through one loaded model:
   one at a time (the pipeline's batch-of-one path, a fresh content cache each round, so
   every picture is encoded as a first visit) against one batched job (`batch_size`), as
   images per second; rounds interleaved (A, B, A, B) so a busy moment hits both alike.
   The largest difference between the two outputs (uint8 steps) is recorded too, and
   each round's own ratio (its two modes ran back to back, under one moment's load).
2. `polychrome generate MODEL --n 64` as a fresh process (wall clock), its start-up
   (a fresh interpreter importing what the command imports) and the in-process sampling
   time of the same 64 images by `pipelines.generate` on a loaded model; the ratio
   (CLI wall - start-up) / in-process sampling is the overhead of the command itself.

The pictures come from the bundled examples (src/polychrome/assets/examples/): the emoji
sources under the eight flips and quarter turns (then shifted by a pixel for more), and
crops of the photo at their own size for native models.

    python benchmarks/inference_overhead.py [--n 48] [--rounds 3] [--batch 32]
        [--gen-n 64] [--out docs/quality/inference_overhead.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import run_facts, run_script

from polychrome.utils.atomic import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "polychrome" / "assets"
RESTYLE_MODELS = {"emoji-stargan": "twemoji", "photo-styles": "pixelart"}
GENERATE_MODEL = "emoji-stylegan"


def make_pictures(model: str, n: int, folder: Path) -> list[Path]:
    """n distinct pictures for `model` from the bundled examples, written as PNGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    if model == "photo-styles":  # a native model: crops of the photo at their own size
        photo = np.asarray(Image.open(ASSETS / "examples" / "photo-chelsea.png").convert("RGB"))
        h, w = photo.shape[:2]
        side = 96
        for k in range(n):
            top = (k * 13) % (h - side)
            left = (k * 29) % (w - side)
            out.append(folder / f"crop-{k:03d}.png")
            Image.fromarray(photo[top:top + side, left:left + side]).save(out[-1])
        return out
    sources = sorted((ASSETS / "examples").glob("source-*.png"))
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sources]
    k = 0
    while len(out) < n:
        a = arrays[k % len(arrays)]
        turn = (k // len(arrays)) % 8
        shift = k // (len(arrays) * 8)
        b = np.rot90(a, turn % 4)
        b = b[:, ::-1] if turn >= 4 else b
        b = np.roll(b, shift, axis=1)
        out.append(folder / f"{sources[k % len(arrays)].stem}-{turn}-{shift}.png")
        Image.fromarray(np.ascontiguousarray(b)).save(out[-1])
        k += 1
    return out


def restyle_side_by_side(model: str, n: int, rounds: int, batch: int, folder: Path) -> dict:
    """img/s one at a time vs batched (medians over interleaved rounds), and their ratio."""
    from polychrome.pipelines.recipe import ContentCache
    from polychrome.pipelines.style import Restyler, restyle

    style = RESTYLE_MODELS[model]
    paths = make_pictures(model, n, folder / model)
    r = Restyler(str(ASSETS / "models" / model))  # loaded once for every round
    restyle(r.model, paths[:2], style=style, restyler=r, batch_size=2)  # untimed warm-up
    rates: dict[str, list[float]] = {"one_at_a_time": [], "batched": []}
    last: dict[str, list] = {}
    for _ in range(rounds):
        for mode, size in (("one_at_a_time", 1), ("batched", batch)):
            r.cache = ContentCache()  # every picture a first visit, in both modes
            t0 = time.perf_counter()
            last[mode] = restyle(r.model, paths, style=style, restyler=r, batch_size=size)
            rates[mode].append(n / (time.perf_counter() - t0))
    diff = max(int(np.abs(a.array.astype(np.int16) - b.array.astype(np.int16)).max())
               for a, b in zip(last["one_at_a_time"], last["batched"], strict=True))
    one, many = statistics.median(rates["one_at_a_time"]), statistics.median(rates["batched"])
    return {"model": model, "style": style, "pictures": n,
            "picture_size": list(last["batched"][0].array.shape[:2]),
            "drawn_at": last["batched"][0].metadata["drawn_at"], "batch_size": batch,
            "rounds": rounds,
            "one_at_a_time_img_per_s": round(one, 2), "batched_img_per_s": round(many, 2),
            "ratio": round(many / one, 2),
            "per_round_img_per_s": {k: [round(v, 2) for v in vs] for k, vs in rates.items()},
            # a round's two modes ran back to back: their ratio sees one moment's load
            "per_round_ratio": [round(b / a, 2) for a, b in zip(rates["one_at_a_time"],
                                                                rates["batched"], strict=True)],
            "max_uint8_difference": diff}


def _wall(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=900)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds


STARTUP_IMPORTS = ("import polychrome.cli.main, polychrome.cli.generate, "
                   "polychrome.persistence.models, polychrome.pipelines.generate")


def generate_overhead(n: int, rounds: int, home: Path) -> dict:
    """CLI wall, start-up and in-process sampling of `generate --n n` (medians)."""
    from polychrome.pipelines.generate import generate
    from polychrome.sampling import load_model_on

    env = {**os.environ, "POLYCHROME_HOME": str(home), "POLYCHROME_BUNDLED_MODELS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    cli = ["-m", "polychrome", "generate", GENERATE_MODEL, "--n", str(n), "--json"]
    _wall([*cli, "-o", str(home / "warm-up")], env)  # registers the bundled models once
    model = load_model_on(str(ASSETS / "models" / GENERATE_MODEL), "cpu")
    generate(model, 2)  # untimed warm-up
    walls, startups, samplings = [], [], []
    for k in range(rounds):
        walls.append(_wall([*cli, "-o", str(home / f"out-{k}")], env))
        startups.append(_wall(["-c", STARTUP_IMPORTS], env))
        t0 = time.perf_counter()
        generate(model, n)
        samplings.append(time.perf_counter() - t0)
    wall, startup, sampling = (statistics.median(v) for v in (walls, startups, samplings))
    return {"model": GENERATE_MODEL, "n": n, "rounds": rounds,
            "command": f"polychrome generate {GENERATE_MODEL} --n {n} -o DIR --json",
            "cli_wall_s": round(wall, 3), "startup_s": round(startup, 3),
            "cli_after_startup_s": round(wall - startup, 3),
            "in_process_sampling_s": round(sampling, 3),
            "ratio": round((wall - startup) / sampling, 2),
            "per_round_s": {"cli_wall": [round(v, 3) for v in walls],
                            "startup": [round(v, 3) for v in startups],
                            "in_process_sampling": [round(v, 3) for v in samplings]},
            "per_round_ratio": [round((w - u) / v, 2) for w, u, v in zip(walls, startups,
                                                                          samplings,
                                                                          strict=True)]}


def measure(n: int, rounds: int, batch: int, gen_n: int, models: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="inference-overhead-") as tmp:
        restyles = [restyle_side_by_side(m, n, rounds, batch, Path(tmp)) for m in models]
        gen = generate_overhead(gen_n, rounds, Path(tmp) / "home")
    return {"restyle": restyles, "generate": gen,
            "goals": {
                **{f"{r['model']}: batched restyle >= 10x one at a time":
                   {"met": r["ratio"] >= 10.0, "value": r["ratio"]} for r in restyles},
                f"generate --n {gen_n}: CLI after start-up <= 2x in-process":
                    {"met": gen["ratio"] <= 2.0, "value": gen["ratio"]}}}


def main(args: argparse.Namespace) -> int:
    result = {**run_facts(), **measure(args.n, args.rounds, args.batch, args.gen_n,
                                       args.models)}
    for r in result["restyle"]:
        print(f"restyle {r['model']} ({r['pictures']} pictures, {r['drawn_at']}): one at a "
              f"time {r['one_at_a_time_img_per_s']} img/s, batched ({r['batch_size']}) "
              f"{r['batched_img_per_s']} img/s: {r['ratio']}x (outputs differ by at most "
              f"{r['max_uint8_difference']} uint8 step)")
    g = result["generate"]
    print(f"generate --n {g['n']}: CLI {g['cli_wall_s']} s wall, start-up {g['startup_s']} s, "
          f"in-process sampling {g['in_process_sampling_s']} s: (wall - start-up) / "
          f"sampling = {g['ratio']}")
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=48, help="Pictures restyled per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds.")
    parser.add_argument("--batch", type=int, default=32, help="Batch size of the batched run.")
    parser.add_argument("--gen-n", type=int, default=64, help="Images of the generate run.")
    parser.add_argument("--models", nargs="+", default=list(RESTYLE_MODELS),
                        choices=list(RESTYLE_MODELS), help="Bundled translators to restyle with.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's own choice).")
    parser.add_argument("--out", default=str(REPO / "docs" / "quality" /
                                             "inference_overhead.json"))
    sys.exit(run_script(main, parser.parse_args()))
