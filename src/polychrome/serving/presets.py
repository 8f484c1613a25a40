"""Training presets (quick / standard / quality) and an honest time estimate for this machine.

A preset is a set of ordinary train-job fields (steps, resolution, batch size, a width
scale for the architecture's default network); the page sends them to POST /api/jobs
like any client would.

The estimate is measured, not guessed: `estimate` trains the exact configuration for a
few steps on the real dataset in a separate process (same environment, thread count
and device as a job worker, so nothing in the web process is disturbed) and times the
steps after the first. Total = setup (data cache, model build) + steps x seconds/step.
Results are cached for a few minutes per configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import PolychromeError
from ..settings import Settings

log = logging.getLogger(__name__)

PROBE_STEPS = 6  # the first step pays warm-up; the next ones are timed
PROBE_MAX_S = 45.0  # a slow config stops measuring after this (the rate is known by then)
PROBE_TIMEOUT_S = 180.0  # the whole subprocess, imports included
CACHE_TTL_S = 600.0


@dataclasses.dataclass(frozen=True)
class Preset:
    label: str
    description: str
    steps: int
    resolution: int
    batch_size: int
    width_factor: float  # times the architecture's default width


PRESETS: dict[str, Preset] = {
    "quick": Preset("Quick", "A first look: 32 px, a slim network, 500 steps. Blurry but "
                    "recognisable styles.", 500, 32, 16, 0.5),
    "standard": Preset("Standard", "32 px, the architecture's default network, 4,000 steps.",
                       4000, 32, 32, 1.0),
    "quality": Preset("Quality", "64 px, the default network, 20,000 steps. Hours on a CPU.",
                      20000, 64, 32, 1.0),
}


def _default_width(arch: str) -> int | None:
    from ..models.registry import get_model_class

    cls = get_model_class(arch)  # unknown architecture -> ModelError (400)
    for f in dataclasses.fields(cls.config_class):
        if f.name == "width" and isinstance(f.default, int):
            return f.default
    return None


def preset_job(arch: str, preset: str, *, steps: int | None = None,
               resolution: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """The train-job fields of a preset for `arch` (explicit arguments win)."""
    if preset not in PRESETS:
        raise PolychromeError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}",
                              code="bad_request")
    p = PRESETS[preset]
    steps = steps or p.steps
    config: dict[str, Any] = {
        "sample_every": max(1, steps // 10), "checkpoint_every": max(1, steps // 5),
        "log_every": max(1, min(10, steps // 50)),
    }
    width = _default_width(arch)
    if width is not None and p.width_factor != 1.0:
        config["model_config"] = {"width": max(4, round(width * p.width_factor))}
    return {"model": arch, "steps": steps, "resolution": resolution or p.resolution,
            "batch_size": batch_size or p.batch_size, "config": config}


def check_model_config(arch: str, tc: Any) -> None:
    """Restoration models: their task / scales / crop must make a model now (4xx), not fail
    the job later. Others refuse `task`, which only restoration models have."""
    from ..errors import ConfigError
    from ..models.registry import get_model_class

    cls = get_model_class(arch)
    mc = tc.model_config
    if cls.family != "restoration":
        if "task" in mc or "scales" in mc:
            raise ConfigError(f"task and scales are for restoration models (pix2pix), not "
                              f"{arch}")
        return
    if mc.get("resolution", tc.resolution) != tc.resolution:
        raise ConfigError(f"model_config.resolution {mc['resolution']} disagrees with the "
                          f"crop / resolution {tc.resolution}; set only crop")
    try:
        cls.config_class.from_dict({**mc, "resolution": tc.resolution})  # ModelError (400)
    except (TypeError, ValueError) as e:  # a value of a type the checks did not expect
        raise ConfigError(f"bad model_config for {arch}: {e}") from None


MAX_MODULES = 20_000  # a model_config that builds more submodules is refused unbuilt


def check_train_config(tc: Any, settings: Settings, *, num_domains: int) -> int:
    """Everything a worker would refuse about run config `tc`, refused now (a 4xx before a
    job row exists): the server's limits, the device, the trainer options, and the model
    config, built on the
    meta device (no memory) to count its parameters against `max_model_params`.
    Returns that count."""
    from ..errors import ConfigError
    from ..models.registry import get_model_class
    from ..training.runs import model_kwargs
    from ..training.trainers.options import options_for_model

    cls = get_model_class(tc.model)  # unknown architecture -> ModelError (400)
    for key, value, setting in (
            ("steps", tc.steps, "train_max_steps"),
            ("batch_size", tc.batch_size, "train_max_batch_size"),
            ("resolution", tc.resolution, "train_max_resolution"),
            ("eval_n", tc.eval_n, "train_max_eval_n"),
            ("sample_cols", tc.sample_cols, "train_max_sample_cols")):
        limit = getattr(settings, setting)
        if value is not None and value > limit:
            raise ConfigError(f"{key} {value:,} is above this server's limit of {limit:,} "
                              f"(setting {setting})")
    check_device(tc.device)
    if tc.fit == "crops" and cls.family not in ("translation", "restoration"):
        raise ConfigError(f"{tc.model} draws whole pictures from noise: crops mode (crop) is "
                          "for image -> image models (stargan, cyclegan, pix2pix)")
    check_model_config(tc.model, tc)
    options_for_model(tc.model, tc.trainer_options)  # unknown / mistyped trainer options
    kwargs = model_kwargs(tc, num_domains)  # resolution / num_domains disagreements
    if kwargs.get("channels", 3) != 3:
        raise ConfigError(f"training data is RGB, so the model needs channels=3 "
                          f"(got {kwargs['channels']})")
    try:
        key = json.dumps(kwargs, sort_keys=True)
    except (TypeError, ValueError):
        raise ConfigError(f"model_config for {tc.model} must hold plain JSON values") from None
    n = count_parameters(tc.model, key)
    if n > settings.max_model_params:
        raise ConfigError(f"this {tc.model} would have {n:,} parameters, above this server's "
                          f"limit of {settings.max_model_params:,} (setting max_model_params); "
                          "use a smaller width or resolution")
    return n


def dataset_domains(ref: Any) -> int:
    """How many styles a resolved dataset has (what a run builds its model with)."""
    return max(1, len(ref.manifest.get("domains") or {}))


def check_device(device: str) -> None:
    """cuda:N must name a GPU of this machine when it has CUDA. Without CUDA here only the
    form is checked (TrainConfig): the worker may run elsewhere, and refuses what it lacks."""
    from ..errors import ConfigError

    if not device.startswith("cuda:"):
        return
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if int(device.split(":", 1)[1]) >= n:
            raise ConfigError(f"device {device!r} does not exist: this machine has {n} GPU"
                              f"{'' if n == 1 else 's'} (cuda:0 to cuda:{n - 1})")


class _TooManyModules(Exception):
    pass


_BUILDING = threading.local()  # the count of the build this thread is checking, if any
_HOOK: list[Any] = []
_HOOK_LOCK = threading.Lock()


def _count_module(_module: Any, _name: str, _sub: Any) -> None:
    count = getattr(_BUILDING, "modules", None)
    if count is None:  # another thread building a real model: not ours to count
        return
    _BUILDING.modules = count + 1
    if count + 1 > MAX_MODULES:
        raise _TooManyModules()


@functools.lru_cache(maxsize=128)
def count_parameters(arch: str, config_json: str) -> int:
    """Parameters of `arch` built from the JSON config on the meta device (nothing is
    allocated); a config that would build more than MAX_MODULES submodules is refused
    before it is finished."""
    import torch
    from torch.nn.modules.module import register_module_module_registration_hook

    from ..errors import ConfigError, PolychromeError
    from ..models.registry import get_model_class

    cls = get_model_class(arch)
    with _HOOK_LOCK:
        if not _HOOK:  # once per process: the global hook list never changes under a build
            _HOOK.append(register_module_module_registration_hook(_count_module))
    _BUILDING.modules = 0
    try:
        config = cls.config_class.from_dict(json.loads(config_json))  # ModelError (400)
        with torch.device("meta"):
            model = cls(config)
        return sum(p.numel() for p in model.parameters())
    except _TooManyModules:
        raise ConfigError(f"this {arch} config builds more than {MAX_MODULES:,} layers; "
                          "use fewer blocks") from None
    except PolychromeError:
        raise
    except Exception as e:  # a value the model's own checks did not expect
        raise ConfigError(f"model_config does not make a {arch}: {type(e).__name__}: "
                          f"{e}") from None
    finally:
        _BUILDING.modules = None


def with_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A preset's run config with a client's overrides (model_config merged key by key)."""
    if not isinstance(overrides.get("model_config", {}), dict):
        raise PolychromeError("config.model_config must be a mapping", code="config_error")
    reserved = sorted(set(overrides) & {"model", "dataset", "steps", "resolution",
                                         "batch_size"})
    if reserved:
        raise PolychromeError(f"set {', '.join(reserved)} as top-level fields, not in config",
                              code="config_error")
    out = {**config, **overrides}
    if "model_config" in config or "model_config" in overrides:
        out["model_config"] = {**config.get("model_config", {}),
                               **overrides.get("model_config", {})}
    return out


def list_presets(arch: str) -> list[dict[str, Any]]:
    out = []
    for name, p in PRESETS.items():
        job = preset_job(arch, name)
        out.append({"name": name, "label": p.label, "description": p.description,
                    "steps": p.steps, "resolution": p.resolution, "batch_size": p.batch_size,
                    "width_factor": p.width_factor, "config": job["config"]})
    return out


# -- measurement -------------------------------------------------------------------------------
def _train_config(job: dict[str, Any], dataset: str) -> dict[str, Any]:
    cfg = {**job["config"], "model": job["model"], "dataset": dataset, "steps": job["steps"],
           "resolution": job["resolution"], "batch_size": job["batch_size"]}
    return cfg


def probe(cfg: dict[str, Any], home: Path) -> dict[str, Any]:
    """Train `cfg` for PROBE_STEPS steps in a throwaway run dir; time them (this process)."""
    from ..training import TrainConfig, train

    run_cfg = {**cfg, "steps": PROBE_STEPS, "sample_every": 0, "sample_every_s": 0,
               "checkpoint_every": 0, "eval_every": 0, "log_every": 1, "keep_last": 1,
               "name": None}  # no grids: only the steps are timed
    marks: list[tuple[int, float]] = []
    t0 = time.monotonic()

    def on_progress(step: int, _total: int, _logs: dict[str, float]) -> None:
        if not marks or marks[-1][0] != step:
            marks.append((step, time.monotonic()))

    (home / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="estimate-", dir=home / "tmp") as d:
        train(TrainConfig.from_dict(run_cfg), run_dir=Path(d) / "run", on_progress=on_progress,
              should_stop=lambda: time.monotonic() - t0 > PROBE_MAX_S, tensorboard=False)
    if not marks:
        raise PolychromeError("the estimate run made no progress", code="estimate_failed")
    if len(marks) >= 3:  # skip step 1 (warm-up: allocations, first-call overheads)
        (s0, t_a), (s1, t_b) = marks[1], marks[-1]
    else:
        (s0, t_a), (s1, t_b) = (0, t0), marks[-1]
    per_step = (t_b - t_a) / max(1, s1 - s0)
    setup = max(0.0, marks[0][1] - t0 - per_step)
    return {"seconds_per_step": per_step, "setup_seconds": setup, "probe_steps": s1 - s0}


class Estimator:
    """Runs probes one at a time in a subprocess and caches them per configuration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def estimate(self, settings: Settings, arch: str, dataset: str, preset: str, *,
                 steps: int | None = None, resolution: int | None = None,
                 batch_size: int | None = None,
                 config: dict[str, Any] | None = None) -> dict[str, Any]:
        from ..persistence.datasets import resolve_dataset

        ref = resolve_dataset(dataset)  # unknown dataset -> 404 before anything runs
        job = preset_job(arch, preset, steps=steps, resolution=resolution,
                         batch_size=batch_size)
        job["config"] = with_overrides(job["config"], config or {})
        cfg = _train_config(job, dataset)
        from ..training import TrainConfig

        check_train_config(TrainConfig.from_dict(cfg), settings,  # bad values -> 400
                           num_domains=dataset_domains(ref))
        measured_cfg = {k: v for k, v in cfg.items() if k != "steps"}
        key = json.dumps(measured_cfg, sort_keys=True)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < CACHE_TTL_S:
                rate = hit[1]
            else:
                rate = self._run_probe(settings, cfg)
                self._cache[key] = (time.monotonic(), rate)
        total = rate["setup_seconds"] + job["steps"] * rate["seconds_per_step"]
        return {"preset": preset, "model": arch, "dataset": dataset, "steps": job["steps"],
                "resolution": job["resolution"], "batch_size": job["batch_size"],
                **rate, "estimated_seconds": round(total, 1), "measured": True,
                "basis": (f"measured just now: {rate['probe_steps']} training steps of this "
                          f"exact configuration at {rate['seconds_per_step']:.3g} s/step, plus "
                          f"{rate['setup_seconds']:.3g} s setup; sampling, checkpoints and "
                          "other work on the machine add to it"),
                "job": job}

    def _run_probe(self, settings: Settings, cfg: dict[str, Any]) -> dict[str, Any]:
        env = {**os.environ, "POLYCHROME_HOME": str(settings.home)}
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "polychrome.serving.presets"],
                                  input=json.dumps(cfg), capture_output=True, text=True,
                                  env=env, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PolychromeError(f"measuring this configuration took longer than "
                                  f"{PROBE_TIMEOUT_S:g} s", code="estimate_failed") from None
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            log.warning("estimate probe failed: %s", proc.stderr[-2000:])
            raise PolychromeError("measuring this configuration failed (see the server log)",
                                  code="estimate_failed") from None
        if "error" in out:
            raise PolychromeError(out["error"]["message"], code=out["error"]["code"])
        log.info("measured %s: %.3f s/step (probe took %.1f s)", cfg.get("model"),
                 out["seconds_per_step"], time.monotonic() - t0)
        return {"seconds_per_step": round(float(out["seconds_per_step"]), 4),
                "setup_seconds": round(float(out["setup_seconds"]), 2),
                "probe_steps": int(out["probe_steps"])}


ESTIMATOR = Estimator()


def _main() -> None:
    """Subprocess entry: a config as JSON on stdin -> the probe's timing as JSON on stdout."""
    from ..settings import get_settings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result: dict[str, Any] = probe(json.loads(sys.stdin.read()), get_settings().home)
    except PolychromeError as e:
        result = {"error": {"code": e.code, "message": str(e)}}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    _main()
