"""Training throughput of every registered model through the real loop, against the matmul peak,
for the current source tree and a baseline commit, measured in the same run.

    python benchmarks/train_throughput.py [--models dcgan,stargan] [--seconds 10]
                                          [--rounds 2] [--baseline REF] [--json [PATH]]
                                          [--threads N] [--resolution 32] [--styles 4]

Baseline comparison (`--baseline REF`, default the commit at which training throughput
was first compared; `--baseline ''` measures the current tree alone): REF's `src/` is
exported with `git archive` into a temporary directory (removed at the end), and every
measurement runs in a fresh subprocess of THIS script with PYTHONPATH at one tree's
`src/`: the measuring code is the same for both sides, only the package under test
differs. Per model the sides alternate (baseline, new, baseline, new, ... `--rounds`
times each) at the same thread count, so a change in the machine's load hits both; each
side's best round (highest achieved GFLOP/s) is reported, and their ratio new / baseline
and the ratio of the sides' median rounds (robust to one side's lucky quiet moment on a
shared machine); the record also holds the ratio of GFLOP per CPU-second.
Every model runs at `--resolution`, except models whose config refuses it (restoration
models need their crop to survive the encoder's downsampling: pix2pix at 32 px would
feed an 8 px input to 3 stride-2 layers), which run at their config's default resolution.

What is timed: `polychrome.training.train()` itself, on a temporary run dir, for each model
at its DEFAULT config and default batch size (`train_defaults`), on an in-memory synthetic
PackedDataset (random uint8 images, `--styles` styles; cyclegan gets the 2 it needs). The
loop's `should_stop` hook is polled once before every step, so the timestamps it takes
bracket whole steps: lr schedule -> the family trainer's train_step (all D steps and the G
step with their optimisers, augmentation, GP, lazy R1, ...) -> NaN guard -> EMA update ->
logging. Nothing else falls in the window: samples are off (sample_every=0), checkpoints are
off (checkpoint_every=0; the one written when the run stops comes after the window), and
the FLOP-counted first step(s) plus `--warmup` more (allocations, kernel selection) are
excluded. The window lasts `--seconds` and at least 2 steps (a window shorter than one
lazy-R1 period may miss stylegan's R1 step, 1/16 of its D steps: raise --seconds to average
over it).

Reported per model:
- train img/s: real images consumed per second (the trainer's `images_per_step`:
  batch x n_critic for the noise zoo, batch for stargan, a batch of each style for cyclegan),
  wall clock and per CPU-second of this process (CPU time stays meaningful when other jobs
  share the machine; the ratio of the two says how many cores the run really got);
- GFLOP/img: matmul/conv FLOPs (torch.utils.flop_counter formulas, 2 x MACs; elementwise
  ops, the optimiser and EMA are not counted) of real training steps of the same run,
  divided by the images a step consumes. They are counted on the first step(s), which are
  untimed anyway: step 0, plus step 1 for lazy R1 (stylegan: R1 on every 16th D step),
  from which the average over an R1 period is derived. The counter's per-module
  attribution is switched off because its backward hooks break `torch.autograd.grad`;
  with it off, the R1 and gradient-penalty double backward ARE counted (column "reg.");
- achieved GFLOP/s = GFLOP/img x img/s, and its fraction of the machine's measured fp32
  matmul peak (n x n @ n x n `torch.matmul`, best of several, same thread count, measured
  before and after the models; the better one is used);
- generate img/s (noise models): the generator alone, eval + inference mode, at the
  default batch size (`--generate-seconds 0` skips it).

`--json [PATH]` (default docs/quality/train_throughput.json) writes the record: the
command, commit and machine (benchmarks/common.py), the settings, the baseline commit,
the matmul peak and per model both sides' rounds, best rows and the ratio.

Figures, not pass/fail; this replaces bench_zoo.py (raw G/D forward/backward without
optimisers). Quote ratios measured in one run: the machine may be shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from polychrome.data.cache import PackedDataset
from polychrome.errors import ModelError, PolychromeError
from polychrome.models import create_model, get_model_class, list_models
from polychrome.sampling import generator_kwargs
from polychrome.training import TrainConfig, resolve_config, train
from polychrome.training.checkpoint import load_checkpoint

log = logging.getLogger("train_throughput")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = "docs/quality/train_throughput.json"
DEFAULT_BASELINE = "bf9e2d9"  # the commit at which the default configs' CPU use was questioned
RESULT_MARK = "TRAIN_THROUGHPUT_ROW "  # a worker's stdout line carrying its JSON row


# -- data --------------------------------------------------------------------------------------
def synthetic_packed(resolution: int, styles: int, per_style: int = 256,
                     seed: int = 0) -> PackedDataset:
    """Random uint8 images in `styles` styles; content does not change the cost of a step.

    File stems repeat across styles, as in the emoji set (aligned drawings).
    """
    g = torch.Generator().manual_seed(seed)
    n = styles * per_style
    images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=g)
    labels = torch.arange(styles).repeat_interleave(per_style)  # (N,) int64
    domains = [f"style{k}" for k in range(styles)]
    files = [f"images/{domains[k]}/{i:04d}.png" for k in range(styles) for i in range(per_style)]
    return PackedDataset(images=images, labels=labels, domains=domains, files=files,
                         resolution=resolution)


def resolution_for(name: str, wanted: int) -> int:
    """`wanted` if the model's config accepts it, else the config's default resolution.

    Restoration models refuse crops too small for their encoder (pix2pix: an 8 px input
    after the default x4 reduction of a 32 px crop, through 3 stride-2 layers).
    """
    cls = get_model_class(name)
    try:
        cls.config_class(resolution=wanted).validate()
        return wanted
    except ModelError:
        return int(cls.config_class().resolution)


def styles_for(name: str, resolution: int, wanted: int) -> int:
    """`wanted` styles if the model accepts that many, else its default (cyclegan: 2)."""
    cls = get_model_class(name)
    try:
        cls.config_class(resolution=resolution, num_domains=wanted).validate()
        return wanted
    except ModelError:
        return int(cls.config_class().num_domains)


# -- FLOP counting -----------------------------------------------------------------------------
class _NoModuleTracking(contextlib.nullcontext):
    """Stands in for FlopCounterMode's module tracker: every FLOP goes to "Global" only.

    The tracker's backward hooks refuse `torch.autograd.grad` on leaf inputs (R1, GP);
    totals need no per-module attribution.
    """

    parents = frozenset({"Global"})

    def __exit__(self, *exc: Any) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _NoModuleTracking()
    # else: a torch without that attribute; models using autograd.grad then fail to count
    return counter


# -- the probe on the loop's should_stop hook --------------------------------------------------
class Probe:
    """The loop's `should_stop`, polled once before every step (poll k: k steps done).

    Phases: the first `flop_steps` steps each under a FLOP counter (they are untimed, so
    the counter's Python overhead costs nothing; step 0 is a lazy-R1 step, step 1 is not);
    then `warmup` more untimed steps; then a timed window of at least `min_steps` steps and
    `seconds`; then stop.
    """

    def __init__(self, warmup: int, seconds: float, flop_steps: int, min_steps: int = 2):
        self.warmup, self.seconds, self.min_steps = warmup, seconds, min_steps
        self.flop_steps = flop_steps
        self.polls = 0
        self.counter: FlopCounterMode | None = None
        self.step_flops: list[int] = []  # FLOPs of steps 0, 1, ...
        self.t0: tuple[float, float] | None = None
        self.timed: tuple[int, float, float] | None = None  # (steps, wall s, CPU s)

    def __call__(self) -> bool:
        done, self.polls = self.polls, self.polls + 1
        now = (time.perf_counter(), time.process_time())
        if self.counter is not None:  # step done - 1 ran under the counter
            self.step_flops.append(self.counter.get_total_flops())
            self.close()
        if done < self.flop_steps:
            self.counter = flop_counter()
            self.counter.__enter__()
            return False
        start = self.flop_steps + self.warmup
        if done == start:
            self.t0 = now
        if done <= start or self.t0 is None:
            return False
        steps = done - start
        if steps < self.min_steps or now[0] - self.t0[0] < self.seconds:
            return False
        self.timed = (steps, now[0] - self.t0[0], now[1] - self.t0[1])
        return True

    def close(self) -> None:
        """Leave the counter's dispatch mode (also when the run failed mid-count)."""
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.counter = None


def mean_step_flops(step_flops: list[int], n_critic: int, r1_interval: int) -> float | None:
    """Average FLOPs per step over a lazy-R1 period, from counted steps 0 and 1.

    D step d (0-based over the run) carries R1 when d % r1_interval == 0; step s holds D
    steps s*n_critic ... s*n_critic + n_critic - 1. With r1_interval == 1 every step costs
    the same and one counted step is enough.
    """
    if not step_flops:
        return None
    if r1_interval <= 1 or len(step_flops) < 2:
        return float(step_flops[0])
    c0, c1 = (sum((s * n_critic + j) % r1_interval == 0 for j in range(n_critic))
              for s in (0, 1))
    if c0 == c1:
        return float(step_flops[0])
    per_r1 = (step_flops[0] - step_flops[1]) / (c0 - c1)  # FLOPs one R1 adds to a D step
    base = step_flops[0] - c0 * per_r1
    return base + per_r1 * n_critic / r1_interval


# -- per model -----------------------------------------------------------------------------
def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def generate_speed(name: str, resolution: int, styles: int, batch: int,
                   seconds: float = 1.0) -> float | None:
    """Generator-only img/s (eval, inference mode) at `batch`; None for non-noise models."""
    model = create_model(name, resolution=resolution, num_domains=styles).eval()
    if model.family != "noise":
        return None
    kw = generator_kwargs(model, 1.0)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, styles, (batch,), generator=g) if styles > 1 else None

    def once() -> None:
        with torch.inference_mode():
            model.generator(model.sample_z(batch, generator=g, device="cpu"), y, **kw)

    once()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        once()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    styles = styles_for(name, args.resolution, args.styles)
    packed = synthetic_packed(args.resolution, styles)
    model = create_model(name, resolution=args.resolution, num_domains=styles)
    cfg = TrainConfig(model=name, dataset="synthetic", resolution=args.resolution,
                      steps=10**9, checkpoint_every=0, sample_every=0, eval_every=0)
    run_cfg = resolve_config(cfg, model.train_defaults)  # what the loop will run with
    r1_interval = int(run_cfg.r1_interval) if run_cfg.r1_gamma > 0 else 1
    regs = [("R1" if r1_interval == 1 else f"R1/{r1_interval}") if run_cfg.r1_gamma > 0 else "",
            "GP" if run_cfg.gp_weight > 0 else ""]
    row: dict[str, Any] = {
        "model": name, "family": model.family, "resolution": args.resolution, "styles": styles,
        "batch": run_cfg.batch_size, "n_critic": run_cfg.n_critic,
        "params_inference_M": sum(_params(getattr(model, m)) for m in model.inference_modules),
        "params_all_M": _params(model),
        "regularisers": "+".join(r for r in regs if r),
    }
    del model
    probe = Probe(args.warmup, args.seconds, flop_steps=2 if r1_interval > 1 else 1)
    error = None
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        try:
            result = train(cfg, packed=packed, run_dir=Path(tmp) / "run", should_stop=probe)
            # images per step is the trainer's own count (batch x n_critic, 2 x batch, ...)
            _, state = load_checkpoint(result.checkpoint)
            row["img_per_step"] = state["images_seen"] / max(1, int(state["step"]))
        except (PolychromeError, RuntimeError) as e:
            error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            log.warning("%s: %s", name, error)
        finally:
            probe.close()
    if probe.timed is None or "img_per_step" not in row:
        row["error"] = error or "the run ended before the timed window"
        return row
    steps, wall, cpu = probe.timed
    imgs = steps * row["img_per_step"]
    row.update(steps=steps, seconds=wall, cpu_seconds=cpu, img_s=imgs / wall,
               img_per_cpu_s=imgs / max(cpu, 1e-9))
    flops = mean_step_flops(probe.step_flops, run_cfg.n_critic, r1_interval)
    if flops is not None:
        row["gflop_per_img"] = flops / row["img_per_step"] / 1e9
        row["gflop_s"] = row["gflop_per_img"] * row["img_s"]
    row["generate_img_s"] = (generate_speed(name, args.resolution, styles, run_cfg.batch_size,
                                            args.generate_seconds)
                             if args.generate_seconds > 0 else None)
    return row


# -- the matmul peak ---------------------------------------------------------------------------
def matmul_peak(n: int = 2048, reps: int = 5, inner: int = 3) -> float:
    """Best fp32 GFLOP/s of `inner` back-to-back (n, n) @ (n, n) products, over `reps` tries."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.matmul(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9


# -- one measurement in a subprocess, against one source tree -------------------------------
class BaselineError(PolychromeError):
    """The baseline commit cannot be resolved or exported (a user's mistake: bad --baseline)."""


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, timeout=120)


def resolve_commit(ref: str) -> str:
    """The full sha of `ref`; BaselineError if this checkout does not know it."""
    done = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise BaselineError(f"--baseline {ref!r} is not a commit of this repository")
    return done.stdout.decode().strip()


@contextlib.contextmanager
def exported_src(commit: str):
    """Yield a temporary directory holding `commit`'s `src/` (removed on exit).

    `git archive` writes a tar of the tree: no worktree, branch or index entry is left
    behind in the repository.
    """
    with tempfile.TemporaryDirectory(prefix="train-throughput-baseline-") as tmp:
        done = _git("archive", "--format=tar", commit, "src")
        if done.returncode != 0:
            raise BaselineError(f"cannot export src/ of {commit[:12]}: "
                                f"{done.stderr.decode(errors='replace').strip()}")
        tar_path = Path(tmp) / "src.tar"
        tar_path.write_bytes(done.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        tar_path.unlink()
        yield Path(tmp) / "src"


def worker_main(args: argparse.Namespace) -> int:
    """`--worker NAME`: measure one model against whatever `polychrome` PYTHONPATH gives,
    print the row as one JSON line on stdout."""
    import polychrome

    row = bench_model(args.worker, args)
    row["package_dir"] = str(Path(polychrome.__file__).resolve().parent)
    row["threads"] = torch.get_num_threads()
    print(RESULT_MARK + json.dumps(row), flush=True)
    return 0


def run_worker(name: str, src: Path, args: argparse.Namespace, resolution: int, styles: int,
               threads: int) -> dict[str, Any]:
    """One measurement of `name` in a fresh process importing polychrome from `src`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
           "--seconds", str(args.seconds), "--warmup", str(args.warmup),
           "--threads", str(threads), "--resolution", str(resolution),
           "--styles", str(styles), "--generate-seconds", str(args.generate_seconds)]
    if args.verbose:
        cmd.append("--verbose")
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=None if args.verbose else subprocess.PIPE, text=True)
    rows = [line[len(RESULT_MARK):] for line in done.stdout.splitlines()
            if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not rows:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"model": name, "error": f"the measuring process failed: {tail[0]}"}
    row = json.loads(rows[-1])
    # PYTHONPATH must have won over any installed copy of the package
    if Path(row.pop("package_dir")) != (src / "polychrome").resolve():
        return {"model": name, "error": "the measuring process imported polychrome from "
                                        "another tree than the one under test"}
    return row


def best(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round with the highest achieved GFLOP/s (img/s when FLOPs are unknown)."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return None
    return max(ok, key=lambda r: (r.get("gflop_s") or 0.0, r["img_s"]))


def compare_model(name: str, sides: dict[str, Path], args: argparse.Namespace,
                  threads: int) -> dict[str, Any]:
    """Alternate the sides `args.rounds` times; best round per side and their ratio."""
    resolution = resolution_for(name, args.resolution)
    styles = styles_for(name, resolution, args.styles)
    rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for k in range(args.rounds):
        for side, src in sides.items():
            print(f"{name}: {side}, round {k + 1} of {args.rounds} ...", file=sys.stderr,
                  flush=True)
            rounds[side].append(run_worker(name, src, args, resolution, styles, threads))
    entry: dict[str, Any] = {"model": name, "resolution": resolution, "styles": styles}
    for side in sides:
        entry[side] = best(rounds[side]) or {"model": name, "error": rounds[side][-1]["error"]}
        entry[f"{side}_rounds"] = rounds[side]
    base, new = entry.get("baseline"), entry["new"]
    if base and base.get("gflop_s") and new.get("gflop_s"):
        entry["gflop_s_ratio"] = new["gflop_s"] / base["gflop_s"]
        # the same per CPU-second of the measuring process: less sensitive to other jobs
        # taking cores away, more to threads spinning while they wait
        entry["gflop_per_cpu_s_ratio"] = (new["gflop_per_img"] * new["img_per_cpu_s"]
                                          / (base["gflop_per_img"] * base["img_per_cpu_s"]))
        # medians over the rounds: one quiet moment on a shared machine makes one side's
        # best round an outlier; the median ignores it once there are 3 rounds or more
        medians = [median_gflop_s(rounds[side]) for side in ("baseline", "new")]
        if all(medians):
            entry["gflop_s_ratio_median"] = medians[1] / medians[0]
    return entry


def median_gflop_s(rounds: list[dict[str, Any]]) -> float | None:
    values = [r["gflop_s"] for r in rounds if r.get("gflop_s")]
    return statistics.median(values) if values else None


# -- output ------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _side_cells(r: dict[str, Any] | None, peak: float) -> list[str]:
    """batch, img/step, train img/s, CPU/wall, GFLOP/img, GFLOP/s, % of peak, generate img/s."""
    if r is None or "error" in r:
        return ["error: " + (r or {}).get("error", "not measured")] + [""] * 7
    gflop_s = r.get("gflop_s")
    return [str(r["batch"]), f"{r['img_per_step']:g}", f"{r['img_s']:.1f}",
            f"{r['cpu_seconds'] / r['seconds']:.2f}", _fmt(r.get("gflop_per_img"), ".3f"),
            _fmt(gflop_s, ".1f"), _fmt(None if gflop_s is None else 100 * gflop_s / peak, ".1f"),
            _fmt(r.get("generate_img_s"), ".0f")]


def markdown_table(entries: list[dict[str, Any]], peak: float) -> str:
    """One row per model and side; the ratio of achieved GFLOP/s on the new row."""
    head = ("| model | family | px | tree | batch | img/step | train img/s | CPU/wall | "
            "GFLOP/img | GFLOP/s | % of peak | generate img/s | GFLOP/s new / baseline "
            "(best; median) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in entries:
        family = next((e[s]["family"] for s in ("new", "baseline")
                       if s in e and "family" in e[s]), "")
        for side in ("baseline", "new"):
            if side not in e:
                continue
            ratio = (f"{e['gflop_s_ratio']:.2f}x; {e['gflop_s_ratio_median']:.2f}x"
                     if side == "new" and "gflop_s_ratio_median" in e else "")
            cells = [e["model"], family, str(e["resolution"]), side,
                     *_side_cells(e[side], peak), ratio]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


README_BEGIN = ("<!-- train-throughput-figures: rendered from "
                "docs/quality/train_throughput.json -->")
README_END = "<!-- /train-throughput-figures -->"


def readme_table(report: dict[str, Any]) -> str:
    """README's block from the benchmark's JSON: the table and how many models reach 2x."""
    st, mach, base = report["settings"], report["machine"], report["baseline"]
    entries = report["models"]
    ratios = {e["model"]: e.get("gflop_s_ratio_median") for e in entries}
    met = sorted(m for m, r in ratios.items() if r is not None and r >= 2.0)
    lines = [README_BEGIN, "",
             f"Each model at its default config and batch through the real training loop on "
             f"synthetic data, {st['threads']} threads, {st['rounds']} alternating round(s) of "
             f"{st['seconds']:g} s per side, the baseline commit "
             f"{str(base.get('commit'))[:10]} against commit {str(report.get('commit'))[:10]} "
             f"(`benchmarks/train_throughput.py`; {mach['cores']} cores, {mach['cpu']}; load "
             f"average {mach.get('load_average_1m')} at the start). fp32 matmul peak measured "
             f"in the same run: {report['matmul_peak_gflop_s']:.1f} GFLOP/s.", "",
             markdown_table(entries, report["matmul_peak_gflop_s"]), "",
             f"Achieved GFLOP/s at least 2x the baseline's (median rounds): "
             f"{', '.join(met) if met else 'none'} of {len(entries)} models.", "",
             README_END]
    return "\n".join(lines)


def compare_main(args: argparse.Namespace) -> int:
    names = [m.strip() for m in args.models.split(",") if m.strip()] or list_models()
    for name in names:
        get_model_class(name)  # an unknown model is a one-line error before any work
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)  # the peak at the workers' thread count
    # A termination unwinds like an exception: the running worker is killed and the
    # exported baseline tree removed (a plain SIGTERM would leave both behind).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    baseline = resolve_commit(args.baseline) if args.baseline else None
    with contextlib.ExitStack() as stack:
        sides: dict[str, Path] = {}
        if baseline is not None:
            sides["baseline"] = stack.enter_context(exported_src(baseline))
        sides["new"] = REPO / "src"
        peak_before = matmul_peak(args.matmul_size)
        entries = [compare_model(name, sides, args, threads) for name in names]
        peak_after = matmul_peak(args.matmul_size)
    peak = max(peak_before, peak_after)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at the end; baseline "
          f"{baseline[:12] if baseline else 'none'}, best of {args.rounds} round(s) per side")
    print(f"fp32 matmul peak ({args.matmul_size}^2 @ {args.matmul_size}^2, best): "
          f"{peak:.1f} GFLOP/s (before the models {peak_before:.1f}, after {peak_after:.1f})")
    print()
    print(markdown_table(entries, peak))
    if args.json:
        from common import run_facts

        from polychrome.utils.atomic import atomic_write_json

        record = {**run_facts(),
                  "settings": {k: getattr(args, k) for k in
                               ("seconds", "warmup", "rounds", "resolution", "styles",
                                "matmul_size", "generate_seconds")} | {"threads": threads},
                  "baseline": {"ref": args.baseline, "commit": baseline},
                  "matmul_peak_gflop_s": peak, "matmul_peak_before_after": [peak_before,
                                                                           peak_after],
                  "models": entries}
        path = Path(args.json)
        atomic_write_json(path if path.is_absolute() else Path.cwd() / path, record)
        print(f"\nwrote {args.json}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated subset (default: all registered)")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed window per model")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed steps before the window (after the FLOP-counted ones)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="measurements per model and side, alternating sides")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE,
                    help=f"git commit to compare with (default {DEFAULT_BASELINE}; '' = none)")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default=None, metavar="PATH",
                    help=f"write the record (default path {DEFAULT_JSON})")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--styles", type=int, default=4, help="styles in the synthetic data")
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--generate-seconds", type=float, default=1.0,
                    help="generator-only timing per noise model (0 = skip)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one model, this tree
    ap.add_argument("-v", "--verbose", action="store_true", help="the loop's logs on stderr")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds < 0 or args.warmup < 0:
        ap.error("--rounds must be >= 1, --seconds and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return worker_main(args) if args.worker else compare_main(args)
    except PolychromeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
