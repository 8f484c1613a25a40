"""Latency of a live restyle slider step through the API: full restyle vs session render.

A full POST /api/restyle decodes the upload, encodes the content, decodes the result
and stores it in the gallery; a session render (POST /api/restyle/sessions/{id}/render,
save=false) only runs the mapping network and the decoder. Prints medians per route
for a StarGAN at the architecture's default size (untrained weights: timing only).

    python benchmarks/web_restyle_latency.py [--resolution 64] [--n 20]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    os.environ["POLYCHROME_HOME"] = tempfile.mkdtemp(prefix="bench-web-")
    torch.set_num_threads(1)  # what `polychrome serve` uses per request (inference_threads)

    from fastapi.testclient import TestClient

    from polychrome.models import create_model
    from polychrome.persistence.models import add_model_version
    from polychrome.serving.app import create_app

    model = create_model("stargan", resolution=args.resolution, num_domains=3)
    model.meta["styles"] = ["a", "b", "c"]
    d = os.path.join(os.environ["POLYCHROME_HOME"], "src-model")
    model.save_pretrained(d, modules=model.inference_modules, meta=dict(model.meta))
    add_model_version(d, "bench")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
                    ).save(buf, "PNG")
    picture = buf.getvalue()

    with TestClient(create_app()) as c:
        def full(i: int) -> None:
            r = c.post("/api/restyle", data={"model": "bench", "style": "b", "seed": "0",
                                             "strength": f"{0.5 + i / (4 * args.n):.3f}"},
                       files={"image": ("p.png", picture, "image/png")})
            assert r.status_code == 200, r.text

        sid = c.post("/api/restyle/sessions", data={"model": "bench"},
                     files={"image": ("p.png", picture, "image/png")}).json()["session"]

        def live(i: int) -> None:
            r = c.post(f"/api/restyle/sessions/{sid}/render",
                       json={"style": "b", "seed": 0, "save": False,
                             "strength": round(0.5 + i / (4 * args.n), 3)})
            assert r.status_code == 200, r.text

        results = {}
        for name, fn in (("full /api/restyle", full), ("session render", live)):
            fn(0)  # warm-up (model load, first-call allocations)
            times = []
            for i in range(args.n):
                t0 = time.perf_counter()
                fn(i + 1)
                times.append(time.perf_counter() - t0)
            results[name] = statistics.median(times)
            print(f"{name:>20}: median {results[name] * 1000:.1f} ms over {args.n} requests "
                  f"({args.resolution} px stargan, 256x256 PNG upload)")
        print(f"session render is {results['full /api/restyle'] / results['session render']:.1f}x "
              "faster per slider step")


if __name__ == "__main__":
    main()
