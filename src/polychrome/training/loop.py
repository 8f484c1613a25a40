"""The one training loop every model family shares.

    train(config) / train(resume=run_dir)
      -> data (packed cache -> loader shard), model, trainer (by model.family), EMA,
         schedules, monitor -> for each step: stop? -> lr -> trainer.train_step ->
         NaN guard -> EMA -> log / samples / eval / checkpoint.

Exactness: everything a step reads is either in the checkpoint (weights, EMA,
optimiser and scaler state, every RNG state, loader position, ADA state) or a
pure function of the step (schedules, EMA beta, instance noise, lazy R1).
Sampling and evaluation run under a forked RNG, so how often they happen never
changes the training trajectory.

Under torchrun (one machine or several) the global rank picks the data shard and the
noise seeds and only global rank 0 writes into the run dir; the local rank picks the
GPU. Every checkpoint (and the end) first checks that all ranks hold the same weights
(`distributed.check_ranks_agree`); rank 0 records the outcome in `ranks.json` in the
run dir and in the result (`world_size`, `ranks`). A fresh run needs the dataset on
every machine; resuming needs the run dir readable by every rank (shared storage).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, TrainingError
from ..models import create_model, get_model_class
from ..utils.atomic import atomic_write_text
from . import distributed as ddp
from .config import TrainConfig, resolve_config
from .ema import EMA
from .monitor import Monitor
from .rng import derive_seed
from .runs import (
    CHECKPOINTS_DIR,
    check_new_run_dir,
    default_evaluator,
    model_kwargs,
    new_run_dir,
    read_run_config,
    resolve_dataset,
    split_dataset_spec,
    write_run_config,
)
from .schedules import make_schedule
from .state import restore_state, save_state
from .trainers import TrainContext, get_trainer_class
from .trainers.options import options_for_model

log = logging.getLogger(__name__)

RANKS_NAME = "ranks.json"  # the last cross-rank weight check (multi-process runs)

ProgressFn = Callable[[int, int, dict[str, float]], None]  # (step, total, latest logs)
StopFn = Callable[[], bool]
Evaluator = Callable[[nn.Module, int], dict[str, float]]  # (EMA model, step) -> metrics


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int  # completed steps
    total_steps: int
    final: dict[str, float]  # last logged losses
    images_per_second: float
    stopped: bool = False  # cancelled via should_stop before reaching total_steps
    checkpoint: Path | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # last evaluation
    world_size: int = 1  # processes that trained it
    ranks: dict[str, Any] | None = None  # last cross-rank weight check (world_size > 1)

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "steps": self.step, "total_steps": self.total_steps,
                "final": self.final, "images_per_second": self.images_per_second,
                "stopped": self.stopped,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "metrics": self.metrics, "world_size": self.world_size, "ranks": self.ranks}


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          overrides: dict[str, Any] | None = None, run_dir: str | Path | None = None,
          packed: Any = None, evaluator: Evaluator | None = None,
          on_progress: ProgressFn | None = None, should_stop: StopFn | None = None,
          show_progress: bool = False, tensorboard: bool = True) -> TrainResult:
    """Train a fresh run from `config`, or continue `resume` (a run dir) to its `steps`.

    overrides: config fields to change (None values ignored); on resume usually
    {"steps": N}. packed: a PackedDataset to train on instead of loading
    `config.dataset` (tests, API uploads). evaluator(model_ema, step) -> metrics
    runs every `eval_every` steps (default: polychrome.metrics' training evaluator
    when available). should_stop() is polled every step; when it returns True
    the run saves a checkpoint and returns with `stopped=True`.
    """
    ckpt = None
    if resume is not None:
        cfg, ckpt = read_run_config(resume)
        run_path: Path | None = Path(resume)
    else:
        if config is None:
            raise ConfigError("train() needs a config or resume=")
        cfg, run_path = config, Path(run_dir) if run_dir is not None else None
    cfg = cfg.replace(**(overrides or {}))
    run = _Run(cfg, run_path, ckpt, resuming=resume is not None, packed=packed,
               evaluator=evaluator, on_progress=on_progress, should_stop=should_stop,
               show_progress=show_progress, tensorboard=tensorboard)
    return run.execute()


class _Run:
    """One training run in one process (rank)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path | None, ckpt: Path | None, *,
                 resuming: bool, packed: Any, evaluator: Evaluator | None,
                 on_progress: ProgressFn | None, should_stop: StopFn | None,
                 show_progress: bool, tensorboard: bool):
        self.raw_cfg, self.run_dir, self.ckpt = cfg, run_dir, ckpt
        self.resuming = resuming
        self._monitor_state: dict[str, Any] = {}
        self.packed, self.evaluator = packed, evaluator
        self.on_progress, self.should_stop = on_progress, should_stop
        self.show_progress, self.tensorboard = show_progress, tensorboard
        self.monitor: Monitor | None = None
        self.last_ckpt: Path | None = ckpt
        self.saved_step = -1
        self.sampled_step = -1  # the step of the last sample grid (none yet)
        self._sample_clock = (0.0, 0.0)  # (time of the last grid, wait before a timed one)
        self.step = 0
        self.images_seen = 0
        self.final: dict[str, float] = {}
        self.metrics: dict[str, float] = {}
        self.rank_check: dict[str, Any] | None = None

    # -- setup -----------------------------------------------------------------------------
    def execute(self) -> TrainResult:
        if not self.raw_cfg.model:
            raise ConfigError("no model given")
        get_model_class(self.raw_cfg.model)  # unknown model -> ModelError before any work
        if not self.raw_cfg.dataset and self.packed is None:
            raise ConfigError("no dataset given")
        was_initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.env = ddp.init_distributed(self.raw_cfg.device)
        owns_group = self.env.enabled and not was_initialized
        det_before = torch.are_deterministic_algorithms_enabled()
        fill_before = torch.utils.deterministic.fill_uninitialized_memory
        try:
            self._setup()
            return self._loop()
        finally:
            if self.monitor is not None:
                self.monitor.close()
            torch.use_deterministic_algorithms(det_before)
            torch.utils.deterministic.fill_uninitialized_memory = fill_before
            if owns_group:
                ddp.shutdown(self.env)

    def _setup(self) -> None:
        env, raw = self.env, self.raw_cfg
        if raw.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            # Deterministic mode also fills every new tensor with NaN (a debugging aid for
            # reads of uninitialised memory): 10 % of a CPU step, and results don't change.
            torch.utils.deterministic.fill_uninitialized_memory = False
            torch.backends.cudnn.benchmark = False
        # A misspelt or mistyped trainer option is refused before any data is read.
        options_for_model(raw.model, raw.trainer_options)
        self._load_data(raw)
        # Same initial weights on every rank: build the model from the run seed alone.
        torch.manual_seed(raw.seed)
        model = create_model(raw.model, **model_kwargs(raw, self.packed.num_domains))
        if raw.fit == "crops" and model.family not in ("translation", "restoration"):
            raise ConfigError(f"{raw.model} draws whole pictures from noise: crops mode "
                              "(--crop) is for image -> image models (stargan, cyclegan, "
                              "pix2pix)")
        self.cfg = cfg = resolve_config(raw, model.train_defaults)
        self.device = env.device
        self.amp_dtype = amp_dtype_for(cfg.amp, self.device)
        channels_last = cfg.channels_last and uses_channels_last(model, self.device)
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        ddp.broadcast_module(model, env)
        model.train()
        self.model = model
        # Each rank its own streams: global RNG (style mixing, augmentation) and noise.
        torch.manual_seed(derive_seed(cfg.seed, "global", env.rank))
        noise_gen = torch.Generator(device=self.device)
        noise_gen.manual_seed(derive_seed(cfg.seed, "noise", env.rank))
        self.ctx = TrainContext(env=env, device=self.device, noise_gen=noise_gen,
                                amp_dtype=self.amp_dtype, channels_last=channels_last)
        self.trainer = get_trainer_class(model.family)(model, cfg, self.ctx)
        self.ema = EMA(model, tuple(model.inference_modules), cfg.ema_decay, cfg.ema_rampup)
        self.schedules = {name: make_schedule(cfg.schedule, cfg.steps,
                                              warmup_steps=cfg.warmup_steps,
                                              min_factor=cfg.min_lr_factor)
                          for name in self.trainer.optimizers}
        self.loader = self.trainer.make_loader(self.train_data)
        self.data_iter = self.loader.forever()
        # The sample-grid inputs: drawn once from the seed, the same for the whole run.
        self.fixed = self.trainer.fixed_inputs(
            self.train_data, torch.Generator().manual_seed(derive_seed(cfg.seed, "fixed")))
        self._setup_run_dir()
        if self.ckpt is not None:
            self.step, extra = restore_state(self, self.ckpt)
            match_state_layouts(self.trainer.optimizers.values())
            self.images_seen = int(extra.get("images_seen", 0))
            self.saved_step = self.step
        self._setup_monitor()
        if self.evaluator is None and cfg.eval_every > 0 and env.is_main:
            self.evaluator = default_evaluator(self.train_data, cfg, self.dataset, self.device)

    def _load_data(self, raw: TrainConfig) -> None:
        if self.packed is None:
            from ..data.cache import load_packed

            name, version = split_dataset_spec(raw.dataset, raw.dataset_version)
            # In three waves: rank 0 first (it may create the index DB and build the
            # packed cache, which concurrent first-time writers would race on), then the
            # first process of every other machine (each may have its own cache to
            # build), then everyone else, who only read.
            env = self.env
            wave = 0 if env.is_main else 1 if env.local_rank == 0 else 2
            for turn in range(3):
                if turn == wave:
                    self.dataset = resolve_dataset(name, version)
                    self.packed = load_packed(self.dataset.path, raw.resolution, raw.fit,
                                              scale=raw.scale)
                ddp.barrier(env)
        else:
            self.dataset = None
            if self.packed.resolution != raw.resolution:
                raise ConfigError(f"packed data is {self.packed.resolution} px but the run "
                                  f"wants {raw.resolution} px")
        self.train_data = self.packed.split(raw.split)
        ddp.check_same_data([len(self.train_data), self.train_data.num_domains,
                             int(self.packed.resolution)], self.env)
        if len(self.train_data) == 0:
            raise ConfigError(f"split {raw.split!r} of the dataset is empty")

    def _setup_run_dir(self) -> None:
        env, cfg = self.env, self.cfg
        if self.run_dir is None:
            # a timestamped name: rank 0 picks it, the others receive it
            self.run_dir = new_run_dir(cfg.model, split_dataset_spec(cfg.dataset, None)[0]
                                       or "data")
        elif not self.resuming:
            check_new_run_dir(self.run_dir)
        ddp.barrier(env)  # every rank checked before rank 0 writes anything
        self.run_dir = Path(ddp.broadcast_str(str(self.run_dir), env))
        self.ckpt_root = self.run_dir / CHECKPOINTS_DIR
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(self.run_dir, cfg)
        ddp.barrier(env)

    def _setup_monitor(self) -> None:
        if not self.env.is_main:
            return
        self.monitor = Monitor(self.run_dir, total_steps=self.cfg.steps, start_step=self.step,
                               show_bar=self.show_progress,
                               images_per_step=self.trainer.images_per_step * self.env.world_size,
                               progress_every_s=self.cfg.progress_every_s,
                               collapse_ratio=self.cfg.collapse_ratio,
                               tensorboard=self.tensorboard)
        if self.ckpt is not None:
            self.monitor.load_state_dict(self._monitor_state)
        log.info("training %s (%s) on %s: %d images, %d styles, %d px, %d steps, batch %d x %d "
                 "rank(s) on %s -> %s", self.cfg.model, self.model.family,
                 self.dataset.spec if self.dataset else "(in memory)", len(self.train_data),
                 self.train_data.num_domains, self.cfg.resolution, self.cfg.steps,
                 self.cfg.batch_size, self.env.world_size, self.device, self.run_dir)

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> TrainResult:
        cfg, env = self.cfg, self.env
        self._sample_clock = (time.monotonic(), cfg.sample_every_s)  # (last grid, next wait)
        if self.step == 0 and cfg.sample_every > 0:
            self._sample(0)
        meter, lifetime = _Meter(), _Meter()
        stopped, first_step = False, self.step
        if self.on_progress is not None and env.is_main:
            self.on_progress(self.step, cfg.steps, {})  # started: the step count and total
        while self.step < cfg.steps:
            if self.should_stop is not None and ddp.broadcast_flag(
                    env.is_main and bool(self.should_stop()), env):
                stopped = True
                log.info("stop requested at step %d: saving a checkpoint", self.step)
                break
            t0 = time.monotonic()
            lrs, logs = self._train_one_step(meter)
            lifetime.add({}, time.monotonic() - t0)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                means, steps, busy = meter.take()
                self._log(ddp.mean_across_ranks(means, env), lrs, self._img_per_sec(steps, busy))
            elif self.step == first_step + 1 and self.on_progress is not None and env.is_main:
                self.on_progress(self.step, cfg.steps, {})  # a job shows its first step at once
            if self.monitor is not None:
                self.monitor.advance(self.step, logs)
            self._periodic(self.step)
        if self.saved_step != self.step:
            self._save(self.step)
        if not stopped and cfg.sample_every > 0 and self.step > first_step \
                and self.sampled_step != self.step:
            self._sample(self.step)  # the final grid
        if self.on_progress is not None and env.is_main:
            self.on_progress(self.step, cfg.steps, dict(self.final))
        _, steps, busy = lifetime.take()
        return TrainResult(run_dir=self.run_dir, step=self.step, total_steps=cfg.steps,
                           final=dict(self.final),
                           images_per_second=round(self._img_per_sec(steps, busy), 2),
                           stopped=stopped, checkpoint=self.last_ckpt, metrics=dict(self.metrics),
                           world_size=env.world_size, ranks=self.rank_check)

    def _train_one_step(self, meter: _Meter) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """lr schedule -> trainer step -> NaN guard -> EMA; returns this step's lrs and logs."""
        t0 = time.monotonic()
        lrs = {name: sched.apply(self.trainer.optimizers[name], self.trainer.base_lrs[name],
                                 self.step) for name, sched in self.schedules.items()}
        logs = self.trainer.train_step(self.data_iter, self.step)
        self._guard_finite(logs)
        self.ema.update(self.model, self.step)
        self.step += 1
        self.images_seen += self.trainer.images_per_step * self.env.world_size
        meter.add(logs, time.monotonic() - t0)
        return lrs, logs

    def _img_per_sec(self, steps: int, seconds: float) -> float:
        """Training throughput over all ranks (sampling, eval and checkpoints excluded)."""
        return steps * self.trainer.images_per_step * self.env.world_size / max(seconds, 1e-9)

    def _periodic(self, step: int) -> None:
        cfg = self.cfg
        if cfg.sample_every > 0 and step % cfg.sample_every == 0 or self._sample_time_due():
            self._sample(step)
        last = step == cfg.steps
        eval_due = cfg.eval_every > 0 and (step % cfg.eval_every == 0 or last)
        metrics = self._evaluate(step) if eval_due else None
        if eval_due or (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0):
            self._save(step, metrics)

    def _guard_finite(self, logs: dict[str, torch.Tensor]) -> None:
        """TrainingError when a log is NaN or infinite (on any rank).

        One reduction over all logs and one read of its result per step (a read waits for
        the device to finish the step); the name of the bad log is only looked for once
        something is wrong.
        """
        finite = all_finite(logs)
        if not ddp.any_true(not finite, self.env):
            return
        bad_name = None if finite else next(
            k for k, v in logs.items() if not bool(torch.isfinite(v.detach()).all()))
        kind = "NaN"
        if bad_name is not None and not bool(torch.isnan(logs[bad_name]).any()):
            kind = "Inf"
        where = f" ({bad_name})" if bad_name else " (on another rank)"
        good = str(self.last_ckpt) if self.last_ckpt is not None else "none"
        msg = (f"loss became {kind} at step {self.step + 1}{where}; "
               f"last good checkpoint: {good}")
        if self.monitor is not None:
            self.monitor._write({"step": self.step + 1, "error": msg})
        raise TrainingError(msg, code="non_finite")

    def _log(self, means: dict[str, torch.Tensor], lrs: dict[str, float], ips: float) -> None:
        vals = {k: float(v) for k, v in means.items()}
        self.final = {k: v for k, v in vals.items() if k != "aug_p"}
        if self.monitor is not None:
            self.monitor.log_step(self.step, self.final, {k: float(v) for k, v in lrs.items()},
                                  self.trainer.aug_p, ips)
            if self.on_progress is not None:
                self.on_progress(self.step, self.cfg.steps, dict(vals))

    def _sample_time_due(self) -> bool:
        """Time-based grids (rank 0 alone: sampling is no collective); each doubles the wait."""
        last, wait = self._sample_clock
        if self.monitor is None or wait <= 0 or time.monotonic() - last < wait:
            return False
        self._sample_clock = (last, 2 * wait)
        return True

    def _sample(self, step: int) -> None:
        if self.monitor is None:
            return
        with _forked_rng(self.device), torch.no_grad():
            grid = self.trainer.sample_grid(self.ema.model, self.fixed)
        self.monitor.log_samples(step, grid.image, grid.samples)
        self.sampled_step = step
        self._sample_clock = (time.monotonic(), self._sample_clock[1])

    def _evaluate(self, step: int) -> dict[str, float] | None:
        if self.monitor is None or self.evaluator is None:
            return None
        try:
            with _forked_rng(self.device):
                metrics = {k: float(v) for k, v in self.evaluator(self.ema.model, step).items()}
        except Exception as e:  # a broken metric must not lose hours of training
            log.warning("evaluation at step %d failed: %s: %s", step, type(e).__name__, e,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            return None
        self.metrics = metrics
        self.monitor.log_eval(step, metrics)
        return metrics

    def _save(self, step: int, metrics: dict[str, float] | None = None) -> None:
        self._check_ranks(step)  # never checkpoint weights the ranks disagree on
        path = save_state(self, step, metrics)  # collective: every rank takes part
        if path is not None:
            self.last_ckpt = path
        self.saved_step = step

    def _check_ranks(self, step: int) -> None:
        """Collective: every rank's parameters (live and EMA) against rank 0's."""
        if not self.env.enabled:
            return
        named = [(f"model.{k}", v) for k, v in self.model.named_parameters()]
        for module in self.ema.module_names:
            named += [(f"ema.{module}.{k}", v)
                      for k, v in getattr(self.ema.model, module).named_parameters()]
        try:
            self.rank_check = ddp.check_ranks_agree(named, self.env, step=step)
        except ddp.RanksDiverged as e:
            self._write_rank_check(e.record)
            if self.monitor is not None:
                self.monitor._write({"step": step, "error": str(e)})
            raise
        self._write_rank_check(self.rank_check)

    def _write_rank_check(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            atomic_write_text(self.run_dir / RANKS_NAME, json.dumps(record, indent=1) + "\n")


class _Meter:
    """Accumulates step logs (per-key means: lazy R1 logs only on some steps) and time."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.seconds = 0, 0.0

    def add(self, logs: dict[str, torch.Tensor], seconds: float) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1
        self.seconds += seconds

    def take(self) -> tuple[dict[str, torch.Tensor], int, float]:
        out = ({k: v / self.counts[k] for k, v in self.sums.items()}, self.steps, self.seconds)
        self.__init__()
        return out


def match_state_layouts(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Give each optimiser state tensor its parameter's memory layout (after a resume).

    A checkpoint stores contiguous tensors, so a resumed run's Adam moments come back
    NCHW beside channels-last weights, where the fresh run had them channels-last. The
    update is elementwise, but a kernel may take another (vectorised or not) path for
    mismatched layouts and round differently: the resumed run would drift from the
    uninterrupted one.
    """
    for opt in optimizers:
        for p, state in opt.state.items():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)  # p's strides


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether a run of `model` on `device` keeps images and conv weights channels-last
    (NHWC) when the config allows it: always on CUDA (tensor-core convolutions want it);
    on a CPU only for models whose `train_defaults` say `cpu_channels_last` (oneDNN's
    convolutions skip a layout reorder per call, but elementwise-heavy models can lose
    more than they gain: measured per model, benchmarks/train_throughput.py)."""
    if device.type == "cuda":
        return True
    defaults = getattr(model, "train_defaults", {}) or {}
    return device.type == "cpu" and bool(defaults.get("cpu_channels_last", False))


# /proc/cpuinfo flags of instructions that compute bf16 products natively: AVX512-BF16 and
# AMX (x86), the BF16 extension (Arm, the "Features" line). Without them torch emulates
# bf16 matmuls and convolutions, far slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (`cpuinfo`: /proc/cpuinfo's text)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: ask torch (x86 only)
            check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
            return bool(check()) if check is not None else False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: CUDA as `distributed.amp_dtype_for` says; on a CPU,
    'auto' is bf16 only where the CPU computes bf16 natively (elsewhere fp32 is far
    faster), 'bf16' is bf16 (with a warning where it is emulated), 'fp16' is ignored."""
    if device.type != "cpu" or mode not in ("auto", "bf16"):
        return ddp.amp_dtype_for(mode, device)
    native = cpu_has_native_bf16()
    if mode == "auto":
        return torch.bfloat16 if native else None
    if not native:
        log.warning("amp=bf16 on a CPU without native bf16 instructions: torch emulates "
                    "them, which is much slower than amp=off")
    return torch.bfloat16


def all_finite(logs: dict[str, torch.Tensor]) -> bool:
    """Whether every element of every log is finite: one host read for the lot."""
    if not logs:
        return True
    flat = torch.cat([v.detach().reshape(-1).float() for v in logs.values()])
    return bool(torch.isfinite(flat).all())


def _forked_rng(device: torch.device):
    devices = [device] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)
