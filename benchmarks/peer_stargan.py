"""Polychrome's StarGAN v2 against the official implementation, same networks, same data.

    python benchmarks/peer_stargan.py --peer-dir DIR --peer-python PY --data DIR --iters N
        [--styles 4] [--resolution 64] [--batch 8] [--threads 2] [--rounds 2] [--warmup 0]
        [--quality-cpu-minutes M] [--quality-stems 24] [--evaluator-steps N] [--seed 0]
        [--json] [--out docs/quality/peer_stargan.json]

--peer-dir is a checkout of the official code (clovaai/stargan-v2: core/model.py,
core/solver.py, core/data_loader.py, core/utils.py) and --peer-python a Python that can
import it (torch, torchvision, munch, scipy and the modules its files import). Nothing of
it is copied here: at run time this script writes a small driver of its own to a temp dir
that puts --peer-dir on sys.path, builds the nets with the official `build_model(args)`
(He init and one Adam per net as its Solver makes them) and runs the body of
`Solver.train` per iteration: `compute_d_loss` latent then reference, `compute_g_loss`
latent then reference (each with its backward and optimiser steps), `moving_average` of
G, F and E, the diversity weight's decay, on batches from its own `get_train_loader` /
`InputFetcher` (num_workers 0, so loading is inside the measured process). The paper's
losses and hyper-parameters, its defaults: lambda_reg = lambda_sty = lambda_ds =
lambda_cyc = 1, ds_iter 100k, w_hpf 0 (no face masks), lr 1e-4, f_lr 1e-6, betas (0, 0.99),
weight decay 1e-4, random resized crop with probability 0.5 and flips (its loader).

Polychrome's side: `StarGANConfig.paper(resolution, styles)` trained through
`polychrome.training.train` with the stargan model's `train_defaults`, the trainer's
options and the choices in POLYCHROME_CHOICES below (one place; recorded in the JSON,
with any hyper-parameter that differs from the official one listed under
`recipe_differences`).

Data: --data holds one folder per style; the first --styles folders (sorted) are used,
squared and resized to --resolution once (Polychrome's decoder and resize), and both sides
get the same pixels: Polychrome an in-memory PackedDataset (split "train"), the official
code train/<style>/ and val/<style>/ PNG folders. The split is Polychrome's fixed held-out
split by file stem, so val/ holds the stems neither side trains on.

Speed: each side runs in its own subprocess with the same thread count
(torch.set_num_threads and OMP/MKL_NUM_THREADS), --rounds times, interleaved A, B, A, B,
so a shared machine's load falls on both. In every run the first iteration is counted
with torch.utils.flop_counter.FlopCounterMode (untimed: it is the warm-up), then --warmup
more untimed iterations, then --iters timed ones. Per side: wall and CPU seconds per
iteration (CPU time of the process, all threads), img/s = batch / wall s, img per
CPU-second, GFLOP per iteration (matmul/conv FLOPs, 2 x MACs, the R1 double backward
included; averaged over an R1 period when Polychrome's R1 is lazy) and achieved GFLOP/s;
`ratio_img_per_s` = Polychrome img/s / official img/s over all rounds, and per round
(`ratio_img_per_cpu_s` the same per CPU-second: steadier when the machine is shared).
Parameters per net (G / F / E / D) are printed for both, so any difference between the
two architectures shows.

Quality (--quality-cpu-minutes M > 0): each side trains from scratch for M minutes of its
own CPU time, then translates the same held-out sources (the first --quality-stems held-out
stems, every source style) into every other style with its EMA networks, latent-guided,
with the same z per translation (seeded), and writes PNGs. Both sets are scored by the
same Polychrome code (`metrics.translation.translation_metrics` with the offline evaluator
trained on these images, refused below the instrument's bar): style accuracy, pixel L1 and
evaluator-feature distance to the real drawing, FID per style in the evaluator's feature
space. A budget of minutes is a few hundred iterations of a 100k-iteration recipe: these
are early-training figures, not the methods' final quality.

Figures, not pass/fail. --json writes the record (command, commit, machine, settings,
figures) to --out atomically; the markdown table is printed either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import run_facts, run_script
from PIL import Image

from polychrome.data.cache import PackedDataset, square_resize
from polychrome.errors import ConfigError, ImageRejected, PolychromeError, TrainingError
from polychrome.imageio import decode_image
from polychrome.utils.atomic import atomic_write_json

log = logging.getLogger("peer_stargan")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "quality" / "peer_stargan.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# The official code's training hyper-parameters (its main.py defaults for the paper's
# losses); w_hpf 0 switches its face-landmark masks off (not a face data set).
PEER_ARGS: dict[str, Any] = {
    "latent_dim": 16, "hidden_dim": 512, "style_dim": 64,
    "lambda_reg": 1.0, "lambda_cyc": 1.0, "lambda_sty": 1.0, "lambda_ds": 1.0,
    "ds_iter": 100_000, "w_hpf": 0.0, "lr": 1e-4, "f_lr": 1e-6, "beta1": 0.0, "beta2": 0.99,
    "weight_decay": 1e-4, "randcrop_prob": 0.5, "num_workers": 0, "mode": "train",
    "resume_iter": 0, "wing_path": "",
}

# Polychrome's run-config choices on top of the stargan model's train_defaults and the
# trainer's option defaults (the batched schedule, lazy R1 every 16th D update: the same
# average strength, fewer double backwards): the paper's losses only (identity and paired
# terms off), the paper's R1 gamma 1, a plain EMA of 0.999 like the official code's (no
# ramp-up), and the diversity weight decaying over the official ds_iter.
POLYCHROME_CHOICES: dict[str, Any] = {
    "r1_gamma": 1.0,
    "ema_rampup": 0.0,
    "schedule": "constant",
    "trainer_options": {"lambda_id": 0.0, "lambda_pair": 0.0, "ds_decay_steps": 100_000},
}


# -- data ---------------------------------------------------------------------------------------
def style_folders(data: Path, styles: int) -> list[Path]:
    """The first `styles` sub-folders of `data` (sorted) that hold images."""
    if not data.is_dir():
        raise ConfigError(f"--data {data} is not a directory")
    folders = [p for p in sorted(data.iterdir())
               if p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())]
    if len(folders) < max(2, styles):
        raise ConfigError(f"--data needs at least {max(2, styles)} sub-folders of images (one "
                          f"per style); {data} has {len(folders)}")
    return folders[:styles]


def load_styles(data: Path, styles: int, resolution: int) -> PackedDataset:
    """One row per image of the chosen style folders, squared and resized once:
    images (N, 3, R, R) uint8, files "images/<style>/<name>" (stems shared across styles)."""
    arrays, labels, files = [], [], []
    folders = style_folders(data, styles)
    for k, folder in enumerate(folders):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                arr = decode_image(f)  # (H, W, 3) uint8, alpha composited on white
            except ImageRejected as e:
                raise ConfigError(f"{f.name} in {folder.name} cannot be read: {e}") from None
            arrays.append(square_resize(arr, resolution))
            labels.append(k)
            files.append(f"images/{folder.name}/{f.name}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return PackedDataset(images=images, labels=torch.tensor(labels, dtype=torch.int64),
                         domains=[p.name for p in folders], files=files, resolution=resolution)


def _save_png(img: torch.Tensor, path: Path) -> None:
    """(3, R, R) uint8 -> PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)


def official_layout(packed: PackedDataset, root: Path) -> tuple[Path, Path]:
    """root/train/<style>/ (Polychrome's train split) and root/val/<style>/ (held out)."""
    for split, name in (("train", "train"), ("heldout", "val")):
        part = packed.split(split)
        for img, f in zip(part.images, part.files, strict=True):
            style, file = f.split("/")[1:]
            _save_png(img, root / name / style / (Path(file).stem + ".png"))
    return root / "train", root / "val"


def quality_rows(packed: PackedDataset, stems: int) -> list[int]:
    """Rows of `packed` for the quality set: every training row plus the held-out rows of
    the first `stems` held-out stems (sorted)."""
    held_files = set(packed.split("heldout").files)
    held_stems = sorted({Path(f).stem for f in held_files})[:stems]
    keep = set(held_stems)
    return [i for i, f in enumerate(packed.files)
            if f not in held_files or Path(f).stem in keep]


def translation_jobs(packed: PackedDataset, seed: int) -> list[dict[str, Any]]:
    """Every held-out row of `packed` into every other style: source PNG (under val/),
    target style index, the seed of its z and the output name. The same list for both."""
    held = packed.split("heldout")
    jobs = []
    for img_i, (label, f) in enumerate(zip(held.labels.tolist(), held.files, strict=True)):
        style, file = f.split("/")[1:]
        for y in range(packed.num_domains):
            if y != label:
                jobs.append({"src": f"{style}/{Path(file).stem}.png", "y": y,
                             "seed": seed * 1_000_003 + len(jobs), "out": f"{len(jobs):05d}.png",
                             "row": img_i})
    return jobs


# -- the official side: a driver written at run time ---------------------------------------------
DRIVER = r'''
"""Driver for benchmarks/peer_stargan.py: runs the official StarGAN v2 code (on sys.path
from the job file) the way its Solver.train does, and times it."""
import contextlib, json, random, sys, time, types

job = json.load(open(sys.argv[1]))
sys.path.insert(0, job["peer_dir"])
import numpy as np
import torch
from PIL import Image

torch.set_num_threads(job["threads"])
from core.model import build_model
from core.solver import compute_d_loss, compute_g_loss, moving_average
from core.data_loader import get_train_loader, InputFetcher
from core.utils import he_init


class NoModuleTracking(contextlib.nullcontext):
    # FlopCounterMode's module tracker breaks autograd.grad (R1): count totals only.
    parents = frozenset({"Global"})

    def __exit__(self, *exc):
        return None


def flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = NoModuleTracking()
    return counter


def now():
    return time.perf_counter(), time.process_time()


def main():
    seed = job["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    args = types.SimpleNamespace(**job["args"])
    nets, nets_ema = build_model(args)
    for name, net in nets.items():  # the Solver initialises the trained nets, not the EMA
        if name != "fan":
            net.apply(he_init)
    optims = {name: torch.optim.Adam(net.parameters(),
                                     lr=args.f_lr if name == "mapping_network" else args.lr,
                                     betas=[args.beta1, args.beta2],
                                     weight_decay=args.weight_decay)
              for name, net in nets.items() if name != "fan"}
    loaders = [get_train_loader(job["train_dir"], which, args.img_size, args.batch_size,
                                args.randcrop_prob, args.num_workers)
               for which in ("source", "reference")]
    fetcher = InputFetcher(loaders[0], loaders[1], args.latent_dim, "train")
    initial_lambda_ds = args.lambda_ds

    def reset_grad():
        for optim in optims.values():
            optim.zero_grad()

    def iteration():  # the body of Solver.train, without logging, samples and checkpoints
        inputs = next(fetcher)
        x_real, y_org = inputs.x_src, inputs.y_src
        x_ref, x_ref2, y_trg = inputs.x_ref, inputs.x_ref2, inputs.y_ref
        z_trg, z_trg2 = inputs.z_trg, inputs.z_trg2
        masks = nets.fan.get_heatmap(x_real) if args.w_hpf > 0 else None
        d_loss, _ = compute_d_loss(nets, args, x_real, y_org, y_trg, z_trg=z_trg, masks=masks)
        reset_grad()
        d_loss.backward()
        optims["discriminator"].step()
        d_loss, _ = compute_d_loss(nets, args, x_real, y_org, y_trg, x_ref=x_ref, masks=masks)
        reset_grad()
        d_loss.backward()
        optims["discriminator"].step()
        g_loss, _ = compute_g_loss(nets, args, x_real, y_org, y_trg, z_trgs=[z_trg, z_trg2],
                                   masks=masks)
        reset_grad()
        g_loss.backward()
        optims["generator"].step()
        optims["mapping_network"].step()
        optims["style_encoder"].step()
        g_loss, _ = compute_g_loss(nets, args, x_real, y_org, y_trg, x_refs=[x_ref, x_ref2],
                                   masks=masks)
        reset_grad()
        g_loss.backward()
        optims["generator"].step()
        moving_average(nets.generator, nets_ema.generator, beta=0.999)
        moving_average(nets.mapping_network, nets_ema.mapping_network, beta=0.999)
        moving_average(nets.style_encoder, nets_ema.style_encoder, beta=0.999)
        if args.lambda_ds > 0:
            args.lambda_ds -= initial_lambda_ds / args.ds_iter

    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "params_M": {name: sum(p.numel() for p in net.parameters()) / 1e6
                        for name, net in nets.items() if name != "fan"}}
    if job["mode"] == "speed":
        stamps = []
        total = 1 + job["warmup"] + job["iters"]
        for k in range(total):
            stamps.append(now())
            if k == 0:  # counted, untimed: the warm-up
                with flop_counter() as counter:
                    iteration()
                out["flops_per_iter"] = counter.get_total_flops()
            else:
                iteration()
        stamps.append(now())
        first = 1 + job["warmup"]
        out["iter_wall_s"] = [stamps[k + 1][0] - stamps[k][0] for k in range(first, total)]
        out["iter_cpu_s"] = [stamps[k + 1][1] - stamps[k][1] for k in range(first, total)]
    else:  # quality: train for a CPU-time budget, then translate the jobs with the EMA nets
        start, n = now(), 0
        while now()[1] - start[1] < job["cpu_seconds"]:
            iteration()
            n += 1
        end = now()
        out.update(iterations=n, wall_s=end[0] - start[0], cpu_s=end[1] - start[1])
        for net in nets_ema.values():
            net.eval()
        jobs = json.load(open(job["jobs"]))
        for i in range(0, len(jobs), 32):
            chunk = jobs[i:i + 32]
            x = torch.stack([torch.from_numpy(np.array(Image.open(job["val_dir"] + "/" + j["src"])
                                                       .convert("RGB"))).permute(2, 0, 1)
                             for j in chunk]).float().div(127.5).sub(1)
            z = torch.cat([torch.randn(1, args.latent_dim,
                                       generator=torch.Generator().manual_seed(j["seed"]))
                           for j in chunk])
            y = torch.tensor([j["y"] for j in chunk], dtype=torch.int64)
            with torch.no_grad():
                fake = nets_ema.generator(x, nets_ema.mapping_network(z, y), masks=None)
            u8 = fake.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
            for img, j in zip(u8, chunk):
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(job["out_dir"] + "/" + j["out"])
    json.dump(out, open(job["result"], "w"))


main()
'''


# -- Polychrome's side (a subprocess of this script: `--side-job FILE`) ---------------------------
def polychrome_recipe(resolution: int, styles: int, batch: int,
                      model_overrides: dict[str, Any]) -> dict[str, Any]:
    """The run config Polychrome trains with: model config, run-config keys and trainer
    options, after the train_defaults / option defaults and POLYCHROME_CHOICES."""
    from polychrome.models.zoo.stargan import StarGAN, StarGANConfig
    from polychrome.training.trainers.stargan import StarGANOptions

    model_config = StarGANConfig.paper(resolution, styles, **model_overrides).to_dict()
    options = {**dataclasses.asdict(StarGANOptions()), **POLYCHROME_CHOICES["trainer_options"]}
    run = {**StarGAN.train_defaults,
           **{k: v for k, v in POLYCHROME_CHOICES.items() if k != "trainer_options"},
           "batch_size": batch}
    return {"model_config": model_config, "run": run, "trainer_options": options}


def recipe_differences(recipe: dict[str, Any], peer: dict[str, Any]) -> list[str]:
    """Hyper-parameters where Polychrome's recipe is not the official one."""
    run, opts = recipe["run"], recipe["trainer_options"]
    pairs = {
        "lr (G, E)": (run["lr_g"], peer["lr"]), "lr (D)": (run["lr_d"], peer["lr"]),
        "lr (F)": (opts["lr_f"], peer["f_lr"]),
        "betas": (list(run["betas"]), [peer["beta1"], peer["beta2"]]),
        "weight decay": (opts["weight_decay"], peer["weight_decay"]),
        "R1 gamma": (run["r1_gamma"], peer["lambda_reg"]),
        "R1 every n-th D update (scaled by n)": (run.get("r1_interval") or 1, 1),
        "updates per iteration": ("2 (batched branches)" if opts.get("batched", True)
                                  else "4", "4"),
        "lambda_sty": (opts["lambda_sty"], peer["lambda_sty"]),
        "lambda_ds": (opts["lambda_ds"], peer["lambda_ds"]),
        "lambda_cyc": (opts["lambda_cyc"], peer["lambda_cyc"]),
        "ds decay iterations": (opts["ds_decay_steps"], peer["ds_iter"]),
        "EMA decay": (run["ema_decay"], 0.999), "loss": (run["loss"], "ns"),
    }
    return [f"{k}: polychrome {a} vs official {b}" for k, (a, b) in pairs.items() if a != b]


class StepClock:
    """The loop's should_stop: a timestamp before every step; the first `flop_steps` steps
    run under a FLOP counter; stops after `total` steps."""

    def __init__(self, flop_steps: int, total: int):
        self.flop_steps, self.total = flop_steps, total
        self.stamps: list[tuple[float, float]] = []
        self.step_flops: list[int] = []
        self.counter: Any = None

    def __call__(self) -> bool:
        from train_throughput import flop_counter

        k = len(self.stamps)
        self.stamps.append((time.perf_counter(), time.process_time()))
        self.close()
        if k < self.flop_steps:
            self.counter = flop_counter()
            self.counter.__enter__()
        return k >= self.total

    def close(self) -> None:
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.step_flops.append(self.counter.get_total_flops())
            self.counter = None


def _batched(cfg: Any) -> bool:
    """Whether the run uses the stargan trainer's batched schedule (its default)."""
    from polychrome.training.trainers.stargan import StarGANOptions

    return bool((cfg.trainer_options or {}).get("batched", StarGANOptions.batched))


def _polychrome_config(job: dict[str, Any]) -> Any:
    from polychrome.training import TrainConfig

    recipe = job["recipe"]
    return TrainConfig.from_dict({
        "model": "stargan", "dataset": "peer-benchmark", "resolution": job["resolution"],
        "model_config": recipe["model_config"], "split": "train", "steps": 10**9,
        "seed": job["seed"], "checkpoint_every": 0, "sample_every": 0, "sample_every_s": 0,
        "eval_every": 0, "progress_every_s": 3600, **recipe["run"],
        "trainer_options": recipe["trainer_options"]})


def polychrome_side(job: dict[str, Any]) -> dict[str, Any]:
    """Train (speed: time steps; quality: a CPU budget, then translate the jobs)."""
    from train_throughput import mean_step_flops

    from polychrome.models.base import GANModel
    from polychrome.training import export_model, train
    from polychrome.training.budget import TimeBudget

    torch.set_num_threads(job["threads"])
    data = torch.load(job["packed"], weights_only=True)
    packed = PackedDataset(images=data["images"], labels=data["labels"],
                           domains=job["domains"], files=job["files"],
                           resolution=job["resolution"])
    cfg = _polychrome_config(job)
    r1_interval = int(cfg.r1_interval or 1) if (cfg.r1_gamma or 0) > 0 else 1
    out: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="peer-stargan-run-") as tmp:
        run_dir = Path(tmp) / "run"
        if job["mode"] == "speed":
            flop_steps = 2 if r1_interval > 1 else 1
            first = flop_steps + job["warmup"]
            clock = StepClock(flop_steps, first + job["iters"])
            try:
                train(cfg, packed=packed, run_dir=run_dir, should_stop=clock, tensorboard=False)
            finally:
                clock.close()
            s = clock.stamps
            out["iter_wall_s"] = [s[k + 1][0] - s[k][0] for k in range(first, len(s) - 1)]
            out["iter_cpu_s"] = [s[k + 1][1] - s[k][1] for k in range(first, len(s) - 1)]
            # the four-update schedule holds 2 D updates per step (latent, reference), the
            # batched one a single update for both branches
            d_updates = 1 if _batched(cfg) else 2
            out["flops_per_iter"] = mean_step_flops(clock.step_flops, d_updates, r1_interval)
        else:
            budget = TimeBudget(job["cpu_seconds"], "cpu", name="polychrome", logger=log)
            result = train(cfg, packed=packed, run_dir=run_dir, should_stop=budget,
                           tensorboard=False)
            wall, cpu = budget.used()
            out.update(iterations=int(result.step), wall_s=wall, cpu_s=cpu)
            model = GANModel.from_pretrained(export_model(run_dir, run_dir / "model")).eval()
            translate_jobs(model, job)
    out["params_M"] = _polychrome_params(job)
    return out


def _polychrome_params(job: dict[str, Any]) -> dict[str, float]:
    from polychrome.models.zoo.stargan import StarGAN, StarGANConfig

    model = StarGAN(StarGANConfig.from_dict(job["recipe"]["model_config"]))
    return {name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
            for name in ("generator", "mapping", "style_encoder", "discriminator")}


def read_png(path: Path) -> torch.Tensor:
    """PNG -> (3, R, R) uint8."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def translate_jobs(model: Any, job: dict[str, Any], chunk: int = 32) -> None:
    """Each job's source into its style with z seeded per job (as the official driver)."""
    from polychrome.sampling import to_uint8

    jobs = json.loads(Path(job["jobs"]).read_text())
    val, out_dir = Path(job["val_dir"]), Path(job["out_dir"])
    latent = int(model.config.latent_dim)
    for i in range(0, len(jobs), chunk):
        part = jobs[i:i + chunk]
        x = torch.stack([read_png(val / j["src"]) for j in part]).float().div(127.5).sub(1)
        z = torch.cat([torch.randn(1, latent, generator=torch.Generator().manual_seed(j["seed"]))
                       for j in part])
        y = torch.tensor([j["y"] for j in part], dtype=torch.int64)
        with torch.inference_mode():
            fake = model.generator(x, model.style_from_latent(z, y))
        for img, j in zip(to_uint8(fake), part, strict=True):
            _save_png(img, out_dir / j["out"])


# -- running the sides ----------------------------------------------------------------------------
def _thread_env(threads: int, keep_pythonpath: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if keep_pythonpath or k != "PYTHONPATH"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_side(side: str, job: dict[str, Any], work: Path, args: argparse.Namespace,
             tag: str) -> dict[str, Any]:
    """One subprocess of `side` ("polychrome" | "official") on `job`; its result dict."""
    job = {**job, "result": str(work / f"{tag}-result.json")}
    job_file = work / f"{tag}-job.json"
    job_file.write_text(json.dumps(job))
    if side == "polychrome":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side-job", str(job_file)]
    else:
        driver = work / "official_driver.py"
        driver.write_text(DRIVER)
        cmd = [str(args.peer_python), str(driver), str(job_file)]
    log.info("%s: %s", tag, side)
    proc = subprocess.run(cmd, cwd=work, env=_thread_env(args.threads, side == "polychrome"),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise TrainingError(f"the {side} run ({tag}) failed with exit code "
                            f"{proc.returncode}:\n{tail}")
    return json.loads(Path(job["result"]).read_text())


def side_jobs(args: argparse.Namespace, packed: PackedDataset, work: Path,
              recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The common part of each side's job file."""
    train_dir, val_dir = official_layout(packed, work / "official-data")
    torch.save({"images": packed.images, "labels": packed.labels}, work / "packed.pt")
    common = {"threads": args.threads, "seed": args.seed, "iters": args.iters,
              "warmup": args.warmup, "resolution": args.resolution, "val_dir": str(val_dir)}
    peer_args = {**PEER_ARGS, "img_size": args.resolution, "num_domains": packed.num_domains,
                 "batch_size": args.batch, "seed": args.seed}
    return {
        "polychrome": {**common, "packed": str(work / "packed.pt"), "domains": packed.domains,
                       "files": packed.files, "recipe": recipe},
        "official": {**common, "peer_dir": str(args.peer_dir.resolve()),
                     "train_dir": str(train_dir), "args": peer_args},
    }


# -- figures ---------------------------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """One side's rounds -> per-iteration means over every timed iteration, and per round."""
    wall = [t for r in runs for t in r["iter_wall_s"]]
    cpu = [t for r in runs for t in r["iter_cpu_s"]]
    flops = runs[0].get("flops_per_iter")
    s_wall, s_cpu = statistics.fmean(wall), statistics.fmean(cpu)
    out = {
        "iterations_timed": len(wall), "wall_s_per_iter": s_wall, "cpu_s_per_iter": s_cpu,
        "img_per_s": batch / s_wall, "img_per_cpu_s": batch / s_cpu,
        "gflop_per_iter": None if flops is None else flops / 1e9,
        "gflop_per_s": None if flops is None else flops / 1e9 / s_wall,
        "params_M": runs[0]["params_M"], "torch": runs[0]["torch"],
        "threads": runs[0]["threads"],
        "rounds": [{"wall_s_per_iter": statistics.fmean(r["iter_wall_s"]),
                    "cpu_s_per_iter": statistics.fmean(r["iter_cpu_s"]),
                    "img_per_s": batch / statistics.fmean(r["iter_wall_s"])} for r in runs],
    }
    return out


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def speed_table(sides: dict[str, dict[str, Any]], ratio: float, per_round: list[float],
                cpu_ratio: float) -> str:
    head = ("| side | s/iter (wall) | s/iter (CPU) | img/s | img per CPU-s | GFLOP/iter | "
            "GFLOP/s | params M (G / F / E / D) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in sides.items():
        # G / F / E / D whatever each side calls its networks (a JSON record sorts keys)
        pm = s["params_M"]
        order = [next(k for k in pm if k.startswith(prefix))
                 for prefix in ("generator", "mapping", "style_encoder", "discriminator")]
        params = " / ".join(f"{pm[k]:.2f}" for k in order)
        lines.append(
            f"| {name} | {s['wall_s_per_iter']:.2f} | {s['cpu_s_per_iter']:.2f} | "
            f"{s['img_per_s']:.3f} | {s['img_per_cpu_s']:.3f} | "
            f"{_fmt(s['gflop_per_iter'], '.1f')} | {_fmt(s['gflop_per_s'], '.1f')} | "
            f"{params} |")
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    lines.append("")
    lines.append(f"ratio_img_per_s (Polychrome / official): {ratio:.2f} (per round: {rounds}); "
                 f"per CPU-second: {cpu_ratio:.2f}")
    return "\n".join(lines)


README_BEGIN = "<!-- peer-stargan-figures: rendered from docs/quality/peer_stargan.json -->"
README_END = "<!-- /peer-stargan-figures -->"


def readme_table(report: dict[str, Any]) -> str:
    """README's block from the benchmark's JSON: the speed table, the ratio and the recipe."""
    st, mach = report["settings"], report["machine"]
    official = report.get("official") or {}
    lines = [README_BEGIN, "",
             f"StarGAN v2's paper networks at {st['resolution']} px, {len(st['styles'])} "
             f"styles, batch {st['batch']}, {st['threads']} threads per side, "
             f"{st['rounds']} interleaved rounds of {st['iters']} timed iteration(s) per side "
             f"(`benchmarks/peer_stargan.py`, commit {str(report.get('commit'))[:10]}, the "
             f"official code at {str(official.get('commit'))[:10]}; {mach['cores']} cores, "
             f"{mach['cpu']}; load average {mach.get('load_average_1m')} at the start):", "",
             speed_table(report["sides"], report["ratio_img_per_s"],
                         report["ratio_img_per_s_per_round"],
                         report.get("ratio_img_per_cpu_s",
                                    report["sides"]["polychrome"]["img_per_cpu_s"]
                                    / report["sides"]["official"]["img_per_cpu_s"])),
             ""]
    if report["recipe_differences"]:
        lines += ["Where Polychrome's recipe differs from the official one (the losses and "
                  "their weights are the paper's on both sides): "
                  + "; ".join(report["recipe_differences"]) + ".", ""]
    if "quality" not in report:
        lines += ["No equal-CPU-time quality run is recorded here (`--quality-cpu-minutes`).",
                  ""]
    lines.append(README_END)
    return "\n".join(lines)


class SavedTranslations:
    """A Translator (metrics.translation) that returns PNGs a side wrote for each job,
    looked up by the source's pixels and the target style; no reference-guided mode."""

    def __init__(self, held: PackedDataset, jobs: list[dict[str, Any]], out_dir: Path):
        self.by_key = {(j["row"], j["y"]): out_dir / j["out"] for j in jobs}
        self.rows: dict[bytes, list[int]] = {}  # source pixels -> held-out rows with them
        for i, img in enumerate(held.images):
            self.rows.setdefault(img.numpy().tobytes(), []).append(i)

    def _png(self, source: torch.Tensor, y: int) -> torch.Tensor:
        # identical pixels in two rows: either row's translation into y is the same job
        rows = self.rows[source.numpy().tobytes()]
        return read_png(next(self.by_key[(r, y)] for r in rows if (r, y) in self.by_key))

    def latent(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        u8 = x.add(1).mul(127.5).round().to(torch.uint8)  # back to the source's pixels
        out = [self._png(img, int(t)) for img, t in zip(u8, y.tolist(), strict=True)]
        return torch.stack(out).float().div(127.5).sub(1)

    def reference(self, x: torch.Tensor, ref: torch.Tensor, y: torch.Tensor) -> None:
        return None


def score(packed: PackedDataset, jobs: list[dict[str, Any]], out_dirs: dict[str, Path],
          evaluator_steps: int | None, seed: int) -> dict[str, Any]:
    """Both sides' PNGs through the same translation metrics and offline evaluator."""
    from polychrome.metrics.api import usable_extractor
    from polychrome.metrics.instrument import EvaluatorUnusable
    from polychrome.metrics.translation import translation_metrics

    try:
        extractor, instrument = usable_extractor("offline", packed,
                                                 evaluator_steps=evaluator_steps)
    except EvaluatorUnusable as e:
        return {"refused": str(e)}
    held = packed.split("heldout")
    out: dict[str, Any] = {"extractor": extractor.name,
                           "evaluator_accuracy": (instrument.get("accuracy") or {}).get("overall")}
    for side, d in out_dirs.items():
        m = translation_metrics(SavedTranslations(held, jobs, d), packed, extractor,
                                seed=seed, n_seeds=1, max_pairs=None)
        fids = [v for v in m["fid_per_style"].values() if v is not None]
        out[side] = {"style_accuracy": m["style_accuracy"], "paired_l1": m["paired_l1"],
                     "paired_feat": m["paired_feat"],
                     "fid_mean": statistics.fmean(fids) if fids else None,
                     "fid_per_style": m["fid_per_style"],
                     "style_accuracy_per_style": m["style_accuracy_per_style"],
                     "n_pairs": m["n_pairs"]}
        out["identity"] = {"style_accuracy": m["identity_style_accuracy"],
                           "paired_l1": m["identity_l1"], "paired_feat": m["identity_feat"]}
    return out


def quality_table(q: dict[str, Any], minutes: float) -> str:
    if "refused" in q:
        return f"quality: the offline evaluator was refused: {q['refused']}"
    head = ("| side | iterations in budget | CPU-min | style accuracy | paired L1 | "
            "feature distance | FID (evaluator features, mean over styles) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    f = _fmt
    for side in ("polychrome", "official", "identity"):
        m, run = q[side], q.get("runs", {}).get(side, {})
        lines.append(f"| {side if side != 'identity' else 'untranslated source'} | "
                     f"{run.get('iterations', '—')} | "
                     f"{f(run.get('cpu_s') and run['cpu_s'] / 60, '.2f')} | "
                     f"{f(m['style_accuracy'], '.1%')} | {f(m['paired_l1'], '.4f')} | "
                     f"{f(m['paired_feat'], '.3f')} | {f(m.get('fid_mean'), '.1f')} |")
    lines.append("")
    lines.append(f"{minutes:g} CPU-minutes per side is early training (the paper trains 100k "
                 "iterations): these figures compare the first iterations, not final quality.")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-dir", type=Path, required=True,
                    help="checkout of the official code (has core/model.py, core/solver.py)")
    ap.add_argument("--peer-python", type=Path, required=True,
                    help="a Python that can import the official code")
    ap.add_argument("--data", type=Path, required=True, help="one sub-folder of images per style")
    ap.add_argument("--iters", type=int, required=True, help="timed iterations per run")
    ap.add_argument("--styles", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, interleaved")
    ap.add_argument("--warmup", type=int, default=0,
                    help="untimed iterations after the first (FLOP-counted, untimed) one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality-cpu-minutes", type=float, default=0.0,
                    help="CPU-time budget per side for the quality table (0 = skip)")
    ap.add_argument("--quality-stems", type=int, default=24,
                    help="held-out stems translated (every source style into every other)")
    ap.add_argument("--evaluator-steps", type=int, default=None,
                    help="offline evaluator training steps (default: the evaluator's)")
    ap.add_argument("--polychrome-model-config", type=json.loads, default={},
                    help="JSON overrides of StarGANConfig.paper (smoke tests: tiny nets; "
                         "the comparison means something only without them)")
    ap.add_argument("--json", action="store_true", help="write the record to --out")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.argv = list(argv)
    return args


def check_args(args: argparse.Namespace) -> None:
    if args.iters < 1 or args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        raise ConfigError("--iters, --rounds and --threads must be >= 1, --warmup >= 0")
    if args.styles < 2 or args.batch < 1 or args.quality_cpu_minutes < 0:
        raise ConfigError("--styles must be >= 2, --batch >= 1, --quality-cpu-minutes >= 0")
    if args.resolution < 16 or args.resolution & (args.resolution - 1):
        raise ConfigError("--resolution must be a power of two >= 16 (the official nets halve "
                          "it down to 4 x 4)")
    for f in ("core/model.py", "core/solver.py", "core/data_loader.py"):
        if not (args.peer_dir / f).is_file():
            raise ConfigError(f"--peer-dir {args.peer_dir} has no {f}: point it at a checkout "
                              "of the official StarGAN v2 code")
    if not os.access(args.peer_python, os.X_OK):
        raise ConfigError(f"--peer-python {args.peer_python} is not an executable")


def record_command(argv: list[str]) -> str:
    """The command as run (from the repo root), with this machine's paths replaced by what
    they stand for."""
    names = {"--peer-dir": "PEER_DIR", "--peer-python": "PEER_PYTHON", "--data": "DATA",
             "--out": "OUT"}
    out = list(argv)
    for i, a in enumerate(out):
        key = a.split("=", 1)[0]
        if i and out[i - 1] in names:
            out[i] = names[out[i - 1]]
        elif "=" in a and key in names:
            out[i] = f"{key}={names[key]}"
    return shlex.join(["python", "benchmarks/peer_stargan.py", *out])


def peer_commit(peer_dir: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(peer_dir), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def speed(args: argparse.Namespace, jobs: dict[str, dict[str, Any]],
          work: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"polychrome": [], "official": []}
    for r in range(args.rounds):
        for side in ("polychrome", "official"):  # A, B, A, B
            runs[side].append(run_side(side, {**jobs[side], "mode": "speed"}, work, args,
                                       f"speed-{side}-{r}"))
    sides = {s: summarise(v, args.batch) for s, v in runs.items()}
    per_round = [p["img_per_s"] / o["img_per_s"]
                 for p, o in zip(sides["polychrome"]["rounds"], sides["official"]["rounds"],
                                 strict=True)]
    # per CPU-second too: on a shared machine wall time follows the load, CPU time less so
    return {"sides": sides, "ratio_img_per_s": sides["polychrome"]["img_per_s"]
            / sides["official"]["img_per_s"], "ratio_img_per_s_per_round": per_round,
            "ratio_img_per_cpu_s": sides["polychrome"]["img_per_cpu_s"]
            / sides["official"]["img_per_cpu_s"]}


def quality(args: argparse.Namespace, packed: PackedDataset, jobs: dict[str, dict[str, Any]],
            work: Path) -> dict[str, Any]:
    tjobs = translation_jobs(packed, args.seed)
    (work / "translations.json").write_text(json.dumps(tjobs))
    runs, out_dirs = {}, {}
    for side in ("polychrome", "official"):
        out_dirs[side] = work / "translations" / side
        out_dirs[side].mkdir(parents=True)
        runs[side] = run_side(side, {**jobs[side], "mode": "quality",
                                     "cpu_seconds": args.quality_cpu_minutes * 60,
                                     "jobs": str(work / "translations.json"),
                                     "out_dir": str(out_dirs[side])}, work, args,
                              f"quality-{side}")
    q = score(packed, tjobs, out_dirs, args.evaluator_steps, args.seed)
    q["runs"] = {s: {k: r[k] for k in ("iterations", "wall_s", "cpu_s")} for s, r in runs.items()}
    q.update(cpu_minutes=args.quality_cpu_minutes, translations=len(tjobs),
             held_out_stems=len({Path(f).stem for f in packed.split("heldout").files}))
    return q


def _main(args: argparse.Namespace) -> int:
    check_args(args)
    full = load_styles(args.data, args.styles, args.resolution)
    packed = full.subset(quality_rows(full, args.quality_stems))
    recipe = polychrome_recipe(args.resolution, packed.num_domains, args.batch,
                               args.polychrome_model_config)
    facts = run_facts()
    with tempfile.TemporaryDirectory(prefix="peer-stargan-") as tmp:
        work = Path(tmp)
        jobs = side_jobs(args, packed, work, recipe)
        result = speed(args, jobs, work)
        if args.quality_cpu_minutes > 0:
            result["quality"] = quality(args, packed, jobs, work)
    record = {
        **facts, "command": record_command(args.argv),
        "settings": {"data": args.data.name, "styles": packed.domains,
                     "images_train": len(packed.split("train")),
                     "resolution": args.resolution, "batch": args.batch,
                     "threads": args.threads, "rounds": args.rounds, "iters": args.iters,
                     "warmup": args.warmup, "seed": args.seed},
        "official": {"commit": peer_commit(args.peer_dir), "args": PEER_ARGS},
        "polychrome_choices": POLYCHROME_CHOICES, "polychrome_recipe": recipe,
        "recipe_differences": recipe_differences(recipe, PEER_ARGS),
        **result,
    }
    print(f"StarGAN v2, {args.resolution} px, {packed.num_domains} styles, batch {args.batch}, "
          f"{args.threads} threads, {args.rounds} rounds x {args.iters} timed iterations per "
          f"side; load average {os.getloadavg()[0]:.1f} at the end")
    if record["recipe_differences"]:
        print("recipe differences: " + "; ".join(record["recipe_differences"]))
    print()
    print(speed_table(result["sides"], result["ratio_img_per_s"],
                      result["ratio_img_per_s_per_round"], result["ratio_img_per_cpu_s"]))
    if "quality" in result:
        print()
        print(quality_table(result["quality"], args.quality_cpu_minutes))
    if args.json:
        atomic_write_json(args.out, record)
        print(f"written: {args.out}", file=sys.stderr)
    return 0


def side_main(job_file: str) -> int:
    """`--side-job FILE`: Polychrome's side of one run, its result written where the job says."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    job = json.loads(Path(job_file).read_text())
    try:
        out = polychrome_side(job)
    except PolychromeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(job["result"]).write_text(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--side-job"] and len(argv) == 2:
        return side_main(argv[1])
    return run_script(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
