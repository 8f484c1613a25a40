"""Parameters and CPU throughput of every noise -> image model at its default config.

    python benchmarks/bench_zoo.py [--resolution 32] [--batch 32] [--steps 3] [--threads 2]

Prints one line per model: G/D parameters, generation img/s (eval, inference
mode) and training img/s for one D step + one G step (non-saturating loss,
forward + backward, no optimiser), each as wall-clock img/s and as images per
CPU-second. Figures, not pass/fail: compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from polychrome.models import create_model, list_models


def _timed(fn, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call. CPU time stays meaningful when
    other jobs share the machine; wall time is what a user waits."""
    fn()  # warm-up (allocations, kernel selection)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def bench(name: str, resolution: int, batch: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(name, resolution=resolution, num_domains=3)
    g, d = model.generator, model.discriminator
    real = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    y = torch.randint(0, 3, (batch,))

    def generate() -> None:
        g.eval()
        with torch.inference_mode():
            g(model.sample_z(batch), y)

    def train_step() -> None:
        model.train()
        with torch.no_grad():
            fake = g(model.sample_z(batch), y)
        d_loss = F.softplus(-d(real, y)).mean() + F.softplus(d(fake, y)).mean()
        d_loss.backward()
        g_loss = F.softplus(-d(g(model.sample_z(batch), y), y)).mean()
        g_loss.backward()
        model.zero_grad(set_to_none=True)

    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    gen, train = _timed(generate, steps), _timed(train_step, steps)
    return {"G_M": n(g), "D_M": n(d), "gen_img_s": batch / gen[0], "gen_img_cpus": batch / gen[1],
            "train_img_s": batch / train[0], "train_img_cpus": batch / train[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"resolution {args.resolution}, batch {args.batch}, {args.threads} threads")
    for name in list_models(family="noise"):
        r = bench(name, args.resolution, args.batch, args.steps)
        print(f"{name:9s} G {r['G_M']:.2f}M  D {r['D_M']:.2f}M  "
              f"generate {r['gen_img_s']:6.0f} img/s ({r['gen_img_cpus']:6.0f} per CPU-s)  "
              f"train {r['train_img_s']:5.0f} img/s ({r['train_img_cpus']:5.0f} per CPU-s)")


if __name__ == "__main__":
    main()
