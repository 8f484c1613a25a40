"""What a training checkpoint holds, and putting it back.

Tensors (safetensors): model.* (every network), ema.* (averaged inference
networks), optim.<name>.<param>.<key> (optimiser moments and step counts),
trainer.* (family extras), rng.<rank>.{cpu,noise,cuda} (every rank's RNG states).
JSON: step, resolved config, model spec, dataset, optimiser param groups,
GradScaler, schedules, loader position, trainer state (ADA p), monitor state,
metrics, images seen.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointError
from . import distributed as ddp
from .checkpoint import (
    load_checkpoint,
    load_module_tensors,
    load_optimizer_state,
    module_tensors,
    optimizer_state,
    save_checkpoint,
)
from .rng import capture_rng, restore_rng

if TYPE_CHECKING:  # pragma: no cover
    from .loop import _Run

log = logging.getLogger(__name__)


def save_state(run: _Run, step: int, metrics: dict[str, float] | None = None) -> Path | None:
    """Checkpoint the run at `step` (completed steps). Collective; rank 0 writes.

    Returns the checkpoint dir on rank 0, None elsewhere.
    """
    rng_all = ddp.gather_states(capture_rng(run.ctx.noise_gen, run.device), run.env)
    # Ranks must hold identical weights (averaged grads); recorded so divergence is visible.
    checksums = ddp.gather_floats(ddp.param_checksum(run.model), run.env)
    if not run.env.is_main:
        return None
    t0 = time.monotonic()
    trainer, cfg = run.trainer, run.cfg
    tensors: dict[str, torch.Tensor] = {}
    tensors.update(module_tensors(run.model, "model"))
    tensors.update({f"ema.{k}": v for k, v in run.ema.state_dict().items()})
    optim_meta = {}
    for name, opt in trainer.optimizers.items():
        t, meta = optimizer_state(opt, f"optim.{name}")
        tensors.update(t)
        optim_meta[name] = meta
    tensors.update({f"trainer.{k}": v for k, v in trainer.state_tensors().items()})
    for rank, states in enumerate(rng_all):
        tensors.update({f"rng.{rank}.{k}": v for k, v in states.items()})
    dataset = None
    if run.dataset is not None:
        dataset = {"name": run.dataset.name, "version": run.dataset.version}
    state = {
        "config": cfg.to_dict(),
        "model": {"name": cfg.model, "family": run.model.family,
                  "config": run.model.config.to_dict(),
                  "inference_modules": list(run.model.inference_modules)},
        "dataset": {**(dataset or {}), "domains": list(run.train_data.domains),
                    "resolution": cfg.resolution, "fit": cfg.fit, "split": cfg.split,
                    "scale": cfg.scale,
                    "images": len(run.train_data)},
        "run": {"id": run.run_dir.name, "world_size": run.env.world_size,
                "param_checksums": checksums},
        "optimizers": optim_meta,
        "base_lrs": dict(trainer.base_lrs),
        "scalers": {name: s.state_dict() for name, s in trainer.scalers.items()},
        "schedules": {name: s.state_dict() for name, s in run.schedules.items()},
        "loader": run.loader.state_dict(),
        "trainer": trainer.state_json(),
        "monitor": run.monitor.state_dict() if run.monitor is not None else {},
        "metrics": metrics or {},
        "images_seen": run.images_seen,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if len(set(checksums)) > 1:
        log.error("ranks hold different weights at step %d (checksums %s)", step, checksums)
    best = None
    if metrics and cfg.best_metric in metrics:
        best = (cfg.best_metric, float(metrics[cfg.best_metric]))
    path = save_checkpoint(run.ckpt_root, step, tensors, state, keep_last=cfg.keep_last,
                           metric=best)
    log.debug("checkpoint %s written in %.2fs", path, time.monotonic() - t0)
    return path


def restore_state(run: _Run, ckpt: Path) -> tuple[int, dict[str, Any]]:
    """Load checkpoint `ckpt` into the freshly built run; returns (step, extra JSON)."""
    tensors, state = load_checkpoint(ckpt)
    spec = state.get("model", {})
    if spec.get("name") != run.cfg.model:
        raise CheckpointError(f"{ckpt} holds a {spec.get('name')!r} run, not {run.cfg.model!r}")
    trainer = run.trainer
    load_module_tensors(run.model, "model", tensors)
    run.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    for name, opt in trainer.optimizers.items():
        if name not in state["optimizers"]:
            raise CheckpointError(f"{ckpt} has no state for optimiser {name!r}")
        load_optimizer_state(opt, f"optim.{name}", tensors, state["optimizers"][name])
    for name, scaler in trainer.scalers.items():
        saved = state.get("scalers", {}).get(name) or {}
        if saved and scaler.is_enabled():
            scaler.load_state_dict(saved)
    trainer.load_state_tensors({k[8:]: v for k, v in tensors.items() if k.startswith("trainer.")})
    trainer.load_state_json(state.get("trainer", {}))
    run.loader.load_state_dict(state["loader"])
    step = int(state["step"])
    _check_schedules(run, state.get("schedules", {}), step)
    saved_world = int(state.get("run", {}).get("world_size", 1))
    rank_key = f"rng.{run.env.rank}."
    if saved_world == run.env.world_size:
        restore_rng({k[len(rank_key):]: v for k, v in tensors.items() if k.startswith(rank_key)},
                    run.ctx.noise_gen, run.device)
    else:
        log.warning("checkpoint was written by %d process(es), resuming with %d: RNG streams "
                    "restart, so this run will not replay bit for bit", saved_world,
                    run.env.world_size)
    run._monitor_state = state.get("monitor", {})
    log.info("resumed from %s (step %d)", ckpt, step)
    return step, {"images_seen": state.get("images_seen", 0), "metrics": state.get("metrics", {})}


def _check_schedules(run: _Run, saved: dict[str, Any], step: int) -> None:
    for name, sched in run.schedules.items():
        old = saved.get(name)
        if old and old != sched.state_dict() and sched.kind != "constant":
            log.warning("lr schedule %r changed on resume (%s -> %s): the lr continues from "
                        "step %d on the new schedule", name, old, sched.state_dict(), step)
