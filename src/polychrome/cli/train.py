"""`polychrome train`: train a model on a dataset, or resume a run; works under torchrun."""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, PolychromeError
from .common import emit_json, json_option
from .main import app

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _graceful_stop() -> Iterator[list[bool]]:
    """SIGTERM / first Ctrl-C ask the loop to checkpoint and stop (the command then registers
    that checkpoint as a model); a second Ctrl-C aborts."""
    flag = [False]
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True
        log.warning("stop requested: saving a checkpoint, then registering the model "
                    "(Ctrl-C again to abort)")

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. embedded): no signal handling
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _default_name(cfg: Any) -> str:
    from ..training.config import default_model_name

    return default_model_name(cfg.dataset, cfg.model)


def _check_store_name(name: str | None) -> None:
    """Fail before training, not after, on a name the model store would refuse."""
    if not name:
        return
    try:
        from ..persistence.models import validate_model_name
    except ImportError:
        return
    validate_model_name(name)


def _parse_scale(text: str | None, flag: str = "--crop-scale") -> list[int] | None:
    if text is None:
        return None
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} takes LO,HI (two integers, e.g. 128,384), got {text!r}") \
            from None
    return [lo, hi]


def _parse_factors(text: str) -> list[int]:
    try:
        factors = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--scale for pix2pix takes the upscaling factor(s), e.g. 4 or 2,4; "
                          f"got {text!r}") from None
    return factors


def _restoration_flags(raw: dict[str, Any], task: str | None, scale: str | None,
                       crop_scale: str | None) -> list[int] | None:
    """Put --task / --scale into raw's model_config for restoration models.

    For pix2pix, --scale is the upscaling factor(s) (`--task sr --scale 4`); for the
    translation models it stays the crop scale range LO,HI (also spelled --crop-scale).
    Returns the crop scale range given on the command line, if any.
    """
    from ..models import get_model_class

    restoration = get_model_class(raw["model"]).family == "restoration"
    if task is not None and not restoration:
        raise ConfigError(f"--task is for restoration models (pix2pix), not {raw['model']}")
    if scale is not None and crop_scale is not None and not restoration:
        raise ConfigError("give the crop scale range once: --crop-scale LO,HI")
    if not restoration:
        return _parse_scale(scale if scale is not None else crop_scale,
                            "--scale" if scale is not None else "--crop-scale")
    mc = dict(raw.get("model_config") or {})
    if task is not None:
        mc["task"] = task
    if scale is not None:
        mc["scales"] = _parse_factors(scale)
    raw["model_config"] = mc
    return _parse_scale(crop_scale)


@app.command("train")
@click.argument("model", required=False)
@click.option("--dataset", help="Dataset name, or name:version (default: latest version).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML run config; flags given here override it.")
@click.option("--steps", type=int, help="Total steps (generator updates) to reach.")
@click.option("--batch-size", type=int, help="Batch size per process.")
@click.option("--resolution", type=int, help="Training resolution in pixels (power of two).")
@click.option("--crop", type=int,
              help="Train on random CROP x CROP crops of the pictures at their own size "
                   "(translation models; sets the resolution).")
@click.option("--task", type=click.Choice(["sr", "inpaint", "colorize"]),
              help="pix2pix: what the model learns (super-resolution, inpainting, "
                   "colorization); training pairs are made from the pictures themselves.")
@click.option("--scale", help="pix2pix --task sr: upscaling factor(s), e.g. 4 or 2,4. "
                              "Translation models: as --crop-scale.")
@click.option("--crop-scale", help="With --crop: LO,HI shorter side in pixels the pictures "
                                   "are scaled to before cropping (default 2x..6x the crop).")
@click.option("--seed", type=int, help="Seed: a seeded CPU run is bit-reproducible.")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Run directory (default: $POLYCHROME_HOME/runs/<timestamp>-<model>-<dataset>).")
@click.option("--name", help="Name to register the trained model under (default <dataset>-<model>).")
@click.option("--device", help="auto (default), cpu, cuda or cuda:N.")
@click.option("--resume", "resume", type=click.Path(file_okay=False),
              help="Continue the run in this directory from its latest checkpoint.")
@json_option
def train_cmd(model: str | None, dataset: str | None, config_path: str | None,
              steps: int | None, batch_size: int | None, resolution: int | None,
              crop: int | None, task: str | None, scale: str | None, crop_scale: str | None,
              seed: int | None, run_dir: str | None, name: str | None, device: str | None,
              resume: str | None, as_json: bool) -> None:
    """Train MODEL on a dataset (one folder per style), or --resume RUN_DIR.

    Checkpoints, samples, metrics.jsonl and TensorBoard events go to the run
    dir. On a terminal a progress bar shows the step, img/s, ETA and the main
    losses; elsewhere a log line comes every `progress_every_s` seconds. At the
    end the EMA generator is exported and registered in the model store; Ctrl-C
    (or SIGTERM) saves a checkpoint and registers that instead. Under `torchrun --nproc_per_node N -m polychrome train ...` (and
    `--nnodes M` with a c10d rendezvous for several machines) each process
    trains on its own shard; only global rank 0 writes, and every checkpoint
    checks that all processes hold the same weights.
    """
    flags = {"steps": steps, "batch_size": batch_size, "resolution": resolution, "seed": seed,
             "name": name, "device": device}
    if resume is not None:
        if model or dataset or config_path or run_dir or crop or scale or crop_scale or task:
            raise ConfigError("with --resume, MODEL, --dataset, --config and --run-dir come "
                              "from the run; only --steps, --batch-size, --seed, --name and "
                              "--device may be given")
    elif config_path is None:  # what a config file could supply is checked before torch loads
        if not model:
            raise ConfigError("missing MODEL (e.g. `polychrome train dcgan --dataset NAME`)")
        if not dataset:
            raise ConfigError("missing --dataset NAME")
    from ..training import TrainConfig, load_yaml_config, train
    from ..training.distributed import env_ranks

    if resume is not None:
        cfg, run_path, overrides = None, None, flags
    else:
        raw = load_yaml_config(config_path) if config_path else {}
        if model:
            raw["model"] = model
        if dataset:
            raw["dataset"] = dataset
        if not raw.get("model"):
            raise ConfigError("missing MODEL (e.g. `polychrome train dcgan --dataset NAME`)")
        if not raw.get("dataset"):
            raise ConfigError("missing --dataset NAME")
        crop_range = _restoration_flags(raw, task, scale, crop_scale)
        for key, value in (("crop", crop), ("scale", crop_range)):
            if value is not None:  # before validation: a config's scale needs the crop
                raw[key] = value
        cfg = TrainConfig.from_dict(raw).replace(**flags)
        run_path, overrides = (Path(run_dir) if run_dir else None), None
    _check_store_name(name or (None if cfg is None else cfg.name)
                      or (None if cfg is None else _default_name(cfg)))
    is_main = env_ranks()[0] == 0
    show_bar = is_main and not as_json and sys.stderr.isatty()
    with _graceful_stop() as stop_flag:
        result = train(cfg, resume=resume, overrides=overrides, run_dir=run_path,
                       should_stop=lambda: stop_flag[0], show_progress=show_bar)
    if not is_main:
        return
    model_info, register_command = _register(result)
    out = {"run_dir": str(result.run_dir), "steps": result.step, "model": model_info,
           "final": result.final, "images_per_second": result.images_per_second,
           "stopped": result.stopped, "metrics": result.metrics}
    if register_command:
        out["register_command"] = register_command
    if as_json:
        emit_json(out)
        return
    state = "stopped" if result.stopped else "trained"
    click.echo(f"{state} {result.step}/{result.total_steps} steps "
               f"({result.images_per_second:.1f} img/s) in {result.run_dir}")
    if model_info:
        click.echo(f"model registered as {model_info['name']}:{model_info['version']} "
                   f"(step {result.step}, {model_info['path']})")
    elif register_command:
        click.echo(f"register the model with: {register_command}")
    if result.stopped:
        click.echo(f"continue with: polychrome train --resume {shlex.quote(str(result.run_dir))}")


def _register(result: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Register the run's latest checkpoint as a model: at the end of a run, and when it
    was stopped (Ctrl-C, SIGTERM) after at least one step. Where a stopped run's model
    cannot be registered, the command that would do it comes back instead."""
    if result.step == 0:
        return None, None
    from ..training import register_run_model
    from ..training.runs import read_run_config

    store_name = read_run_config(result.run_dir)[0].name
    command = (f"polychrome models register {shlex.quote(str(result.run_dir))} "
               f"--name {shlex.quote(store_name)}")
    try:
        info = register_run_model(result.run_dir, store_name)
    except (PolychromeError, OSError) as e:  # e.g. the store cannot be written to
        if not result.stopped:
            raise
        log.warning("the stopped run's model was not registered: %s", e)
        return None, command
    if info is None:
        return None, command
    return {"name": info["name"], "version": info["version"], "path": str(info["path"])}, None
