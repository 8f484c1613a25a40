"""Real-time style switching: a full restyle vs a switch on the cached content encoding.

    python benchmarks/style_switch.py [--model PATH_OR_NAME] [--resolutions 32 64]
                                      [--reps 30] [--threads 2] [--json OUT.json]

Full restyle = decode a 256 px PNG (safe decoder) + resize to the model + G.encode +
mapping F + G.decode, through `Restyler` with an empty content cache each time (what a
one-off `polychrome restyle` does per image). Switch = `Restyler.render` with another
style on the cached content: F + G.decode only (what the live sliders do). Both include
the pipeline's own overhead (recipe, metadata, uint8 conversion). Prints p50 of each and
the ratio (and the ratio of the fastest runs, steadier on a shared machine). A randomly initialised default-size stargan is used unless --model is given
(weights do not change the cost). --json writes the run (command, commit, machine) and the
figures (seconds). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time

import numpy as np
import torch
from common import run_facts
from PIL import Image

from polychrome.models import create_model
from polychrome.pipelines.style import ContentCache, Restyler

STYLES = ["ink", "neon", "pastel"]


def _png(size: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    arr = np.stack([(xx * 255 // size), (yy * 255 // size), rng.integers(0, 256, (size, size))],
                   axis=-1).astype(np.uint8)  # a gradient with noise: not trivially compressible
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def bench(model, reps: int, picture: bytes) -> dict[str, float]:
    live = Restyler(model, cache=ContentCache())
    live.set_image(picture)
    state = {"i": 0}
    styles = model.style_names  # a given model's own styles (the built ones use STYLES)

    def full() -> None:
        r = Restyler(model, cache=ContentCache())  # nothing cached: decode + encode again
        r.set_image(picture)
        r.render(styles[1 % len(styles)], seed=0)

    def switch() -> None:
        state["i"] += 1  # a different style / seed every time, like a slider
        live.render(styles[state["i"] % len(styles)], seed=state["i"])

    x = live.source.tensor("cpu")
    content = live.content()
    with torch.inference_mode():
        s = model.style_from_latent(model.sample_z(1), 1)

    def encode() -> None:
        with torch.inference_mode():
            model.generator.encode(x)

    def decode() -> None:
        with torch.inference_mode():
            model.generator.decode(content, s)

    fns = {"full": full, "switch": switch, "encode": encode, "decode": decode}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(reps + 2):  # interleaved: load from other processes hits all alike
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if rep >= 2:  # two warm-up rounds (allocator, first-call dispatch)
                times[k].append(time.perf_counter() - t0)
    return {**{k: statistics.median(v) for k, v in times.items()},
            "ratio_min": min(times["full"]) / min(times["switch"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a registered model or model dir (stargan)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--input-size", type=int, default=256, help="side of the input picture")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the run and its figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    picture = _png(args.input_size)
    print(f"torch {torch.__version__}, {args.threads} thread(s), input {args.input_size} px PNG "
          f"({len(picture)} bytes), p50 of {args.reps}")
    print(f"{'model':<28} {'full ms':>9} {'switch ms':>10} {'ratio':>7} {'encode ms':>10} "
          f"{'decode ms':>10} {'ratio of min':>13}")
    rows = []
    with tempfile.TemporaryDirectory() as home:
        import os

        os.environ.setdefault("POLYCHROME_HOME", home)
        if args.model:
            from polychrome.persistence.models import load_model

            models = [(args.model, load_model(args.model))]
        else:
            models = []
            for res in args.resolutions:
                torch.manual_seed(0)
                m = create_model("stargan", resolution=res, num_domains=3).eval()
                m.meta["styles"] = STYLES
                n = sum(p.numel() for n_, p in m.named_parameters()
                        if not n_.startswith("discriminator"))
                models.append((f"stargan {res}px ({n / 1e6:.2f}M)", m))
        for label, m in models:
            r = bench(m, args.reps, picture)
            print(f"{label:<28} {r['full'] * 1e3:9.2f} {r['switch'] * 1e3:10.2f} "
                  f"{r['full'] / r['switch']:6.2f}x {r['encode'] * 1e3:10.2f} "
                  f"{r['decode'] * 1e3:10.2f} {r['ratio_min']:12.2f}x")
            rows.append({"model": label, "p50_s": {k: r[k] for k in
                                                    ("full", "switch", "encode", "decode")},
                         "ratio_p50": r["full"] / r["switch"], "ratio_min": r["ratio_min"]})
    if args.json:
        report = {**run_facts(), "input_size": args.input_size, "reps": args.reps,
                  "threads": args.threads, "png_bytes": len(picture), "runs": rows}
        with open(args.json, "w") as f:
            f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
