"""Translation models (stargan, cyclegan): size, StarGAN's encode/decode split, training speed.

    python benchmarks/bench_translation.py [--resolution 32] [--threads 2] [--steps 6]

Prints parameters per network; for stargan the FLOPs and time of generator.encode
(style-free, cacheable) vs generator.decode (per style) at batch 1 and 8 — the cost of
switching style on a cached content is the decode alone; and training seconds per step
of the real trainers on the shared loop (default configs, synthetic shapes data,
in-memory). Figures, not pass/fail: quote ratios measured in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from polychrome.data.cache import PackedDataset
from polychrome.data.synthetic import make_shapes_dataset
from polychrome.models import create_model
from polychrome.models.zoo.stargan import StarGAN, StarGANConfig


def _timed(fn, reps: int = 10) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def params(model: torch.nn.Module) -> str:
    parts = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}
    total = sum(parts.values())
    return ", ".join(f"{n} {v / 1e6:.2f}M" for n, v in parts.items()) + f" | total {total / 1e6:.2f}M"


@torch.inference_mode()
def split(model: StarGAN, batch: int) -> str:
    r = model.config.resolution
    x = torch.rand(batch, 3, r, r) * 2 - 1
    s = torch.randn(batch, model.config.style_dim)
    g = model.generator.eval()
    c = g.encode(x)
    fe, fd = _flops(lambda: g.encode(x)), _flops(lambda: g.decode(c, s))
    te, td = _timed(lambda: g.encode(x)), _timed(lambda: g.decode(c, s))
    return (f"B={batch}: content {tuple(c.features.shape[1:])}, encode {fe / 1e9:.3f} GFLOP "
            f"{te * 1e3:.1f} ms, decode {fd / 1e9:.3f} GFLOP {td * 1e3:.1f} ms "
            f"(encode share: {fe / (fe + fd):.0%} of FLOPs, {te / (te + td):.0%} of time)")


def shapes_packed(resolution: int, styles: int) -> PackedDataset:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_shapes_dataset(Path(tmp), n=64, size=resolution)
        dirs = sorted(p for p in root.iterdir() if p.is_dir())[:styles]
        imgs, labels, files = [], [], []
        for k, d in enumerate(dirs):
            for f in sorted(d.glob("*.png")):
                imgs.append(np.asarray(Image.open(f).convert("RGB")))
                labels.append(k)
                files.append(f"images/{d.name}/{f.name}")
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return PackedDataset(images=images, labels=torch.tensor(labels), files=files,
                         domains=[d.name for d in dirs], resolution=resolution)


def train_speed(name: str, resolution: int, styles: int, steps: int) -> str:
    from polychrome.training import TrainConfig, train

    packed = shapes_packed(resolution, styles)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=name, dataset="shapes", resolution=resolution, steps=steps,
                          checkpoint_every=0, sample_every=0, log_every=1)
        t0 = time.perf_counter()
        res = train(cfg, packed=packed, run_dir=Path(tmp) / "run", tensorboard=False)
        wall = time.perf_counter() - t0
    return (f"{name}: {steps} steps in {wall:.1f} s incl. setup, {res.images_per_second:.1f} "
            f"source img/s ({res.images_per_second and 1 / res.images_per_second:.3f} s/img)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    star = create_model("stargan", resolution=args.resolution, num_domains=4)
    print(f"stargan default @{args.resolution}px, 4 styles: {params(star)}")
    for b in (1, 8):
        print("  " + split(star, b))
    with torch.device("meta"):
        paper = StarGAN(StarGANConfig.paper(resolution=64, num_domains=4))
    print(f"stargan paper @64px, 4 styles: {params(paper)}")
    cyc = create_model("cyclegan", resolution=args.resolution)
    print(f"cyclegan default @{args.resolution}px: {params(cyc)}")
    if args.steps > 0:
        print("  " + train_speed("stargan", args.resolution, 4, args.steps))
        print("  " + train_speed("cyclegan", args.resolution, 2, args.steps))


if __name__ == "__main__":
    main()
