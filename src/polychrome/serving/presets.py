"""Training presets (quick / standard / quality) and an honest time estimate for this machine.

A preset is a set of ordinary train-job fields (steps, resolution, batch size, a width
scale for the architecture's default network); the page sends them to POST /api/jobs
like any client would. Quick is defined by its time, not its steps: once measured, it
takes as many steps as fit in about QUICK_TARGET_S on this machine.

The estimate is measured, not guessed: `estimate` trains each preset's exact job
configuration (overrides, crops and step count included) for a few steps on the real
dataset in a separate process (same environment, thread count and device as a job
worker, so nothing in the web process is disturbed), sets the first steps' warm-up apart
as a one-off cost and times a window of whole lazy-R1 periods after it (wall clock and
CPU time). Total = setup + warm-up + steps x seconds/step + checkpoints x their time.
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

PROBE_WARMUP_STEPS = 1  # allocations, kernel selection, optimiser state: a one-off cost
PROBE_MIN_TIMED = 3  # steps timed after the warm-up (rounded up to whole lazy-R1 periods)
PROBE_MAX_TIMED = 20  # ... and more, up to this many, while the window is shorter than
PROBE_WINDOW_S = 8.0
PROBE_MAX_S = 90.0  # a very slow config stops at the first whole period after this
PROBE_TIMEOUT_S = 300.0  # per configuration, imports included
CACHE_TTL_S = 600.0
QUICK_TARGET_S = 300.0  # Quick's run time on this machine
QUICK_MIN_STEPS = 100  # Quick's floor: a slow machine still gets a run that learns something


@dataclasses.dataclass(frozen=True)
class Preset:
    label: str
    description: str
    steps: int
    resolution: int
    batch_size: int
    width_factor: float  # times the architecture's default width
    target_seconds: float | None = None  # once measured, steps sized to this run time


PRESETS: dict[str, Preset] = {
    "quick": Preset("Quick", "A first look: 32 px, a slim network, as many steps as fit in "
                    "about 5 minutes on this machine once measured (500 before). Blurry but "
                    "recognisable styles.", 500, 32, 16, 0.5, QUICK_TARGET_S),
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
                    "width_factor": p.width_factor, "target_seconds": p.target_seconds,
                    "config": job["config"]})
    return out


# -- measurement -------------------------------------------------------------------------------
def _train_config(job: dict[str, Any], dataset: str) -> dict[str, Any]:
    return {**job["config"], "model": job["model"], "dataset": dataset, "steps": job["steps"],
            "resolution": job["resolution"], "batch_size": job["batch_size"]}


def r1_period(tc: Any) -> int:
    """Steps after which a run's per-step work repeats: lazy R1 (every `r1_interval`-th D
    step) makes some steps dearer, so a timed window of whole periods averages it."""
    from ..models.registry import get_model_class
    from ..training import resolve_config

    cfg = resolve_config(tc, get_model_class(tc.model).train_defaults)
    interval = int(cfg.r1_interval or 1)
    return interval if (cfg.r1_gamma or 0) > 0 and interval > 1 else 1


def probe(cfg: dict[str, Any], home: Path) -> dict[str, Any]:
    """Train `cfg` in a throwaway run dir (this process) and time its steps.

    The run is the job's own configuration, its step count included (schedules and loss
    weights that decay over the run see the job's); it stops, through should_stop, once
    enough steps are timed. The first PROBE_WARMUP_STEPS steps (allocations, kernel
    selection, optimiser state) are timed apart as a one-off cost; the window after them
    holds whole lazy-R1 periods. The checkpoint train() writes when it stops is timed too.
    Sampling and evaluation are off: they are not per-step work."""
    import torch

    from ..training import TrainConfig, train
    from ..training.checkpoint import STATE_NAME

    run_cfg = {**cfg, "sample_every": 0, "sample_every_s": 0, "checkpoint_every": 0,
               "eval_every": 0, "log_every": 1, "keep_last": 1, "name": None}
    tc = TrainConfig.from_dict(run_cfg)
    period = r1_period(tc)
    min_timed = period * -(-PROBE_MIN_TIMED // period)
    marks: list[tuple[int, float, float]] = []  # (step, wall, CPU) as each step ends
    last_call: list[float] = []

    def on_progress(step: int, _total: int, _logs: dict[str, float]) -> None:
        now = (time.monotonic(), time.process_time())
        last_call[:] = [now[0]]
        if not marks or marks[-1][0] != step:
            marks.append((step, *now))

    def should_stop() -> bool:
        timed = (marks[-1][0] if marks else 0) - PROBE_WARMUP_STEPS
        if timed < 1 or timed % period:
            return False
        window = marks[-1][1] - marks[PROBE_WARMUP_STEPS][1]
        return window >= PROBE_MAX_S or timed >= min_timed and (
            window >= PROBE_WINDOW_S or timed >= PROBE_MAX_TIMED)

    (home / "tmp").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="estimate-", dir=home / "tmp") as d:
        result = train(tc, run_dir=Path(d) / "run", on_progress=on_progress,
                       should_stop=should_stop, tensorboard=False)
        state = {}
        if result.checkpoint is not None and (result.checkpoint / STATE_NAME).is_file():
            state = json.loads((result.checkpoint / STATE_NAME).read_text())
    if len(marks) < 2:
        raise PolychromeError("the estimate run made no step", code="estimate_failed")
    warmup = PROBE_WARMUP_STEPS if len(marks) > PROBE_WARMUP_STEPS + 1 else 0
    start, end = marks[warmup], marks[-1]  # a run shorter than the warm-up: all its steps
    n = end[0] - start[0]
    per_step, cpu_per_step = (end[1] - start[1]) / n, (end[2] - start[2]) / n
    per_image = int(state.get("images_seen", 0)) // max(1, result.step)
    return {"seconds_per_step": per_step, "cpu_seconds_per_step": cpu_per_step,
            "images_per_step": per_image,
            "images_per_second": per_image / per_step if per_step > 0 else 0.0,
            "setup_seconds": marks[0][1] - t0,
            "warmup_seconds": max(0.0, marks[warmup][1] - marks[0][1] - warmup * per_step),
            "checkpoint_seconds": max(0.0, last_call[0] - end[1]),
            "steps_timed": n, "warmup_steps": warmup, "r1_period": period,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count() or 1,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def checkpoint_count(job: dict[str, Any]) -> int:
    """Checkpoints a job writes: every checkpoint_every steps, and one at the end."""
    steps, every = job["steps"], int(job["config"].get("checkpoint_every", 1000))
    return steps // every + (steps % every != 0) if every > 0 else 1


def eta_seconds(rate: dict[str, Any], job: dict[str, Any]) -> float:
    """Setup and warm-up once, then the steps and the checkpoints at the measured rates."""
    return (rate["setup_seconds"] + rate["warmup_seconds"] + job["steps"] *
            rate["seconds_per_step"] + checkpoint_count(job) * rate["checkpoint_seconds"])


def size_steps(preset: Preset, rate: dict[str, Any], make_job: Any,
               max_steps: int) -> tuple[int, str]:
    """The step count that makes `preset`'s run last its target_seconds at the measured rate
    (never below QUICK_MIN_STEPS, never above the server's max), and how it was chosen.
    `make_job(steps)` gives the job's fields for a step count (its checkpoints count too)."""
    per_step = rate["seconds_per_step"]
    once = rate["setup_seconds"] + rate["warmup_seconds"]
    target = float(preset.target_seconds or 0.0)
    fit = max(0, int((target - once) // per_step)) if per_step > 0 else max_steps
    saves = checkpoint_count(make_job(max(1, fit)))  # they depend on the step count
    fit = max(0, int((target - once - saves * rate["checkpoint_seconds"]) // per_step)) \
        if per_step > 0 else max_steps
    while fit > 1 and eta_seconds(rate, make_job(fit)) > target:  # one checkpoint more
        fit -= 1
    saves = checkpoint_count(make_job(max(1, fit)))
    how = (f"{target / 60:g} minutes on this machine: ({target:g} s - {once:.3g} s setup - "
           f"{saves} checkpoints x {rate['checkpoint_seconds']:.2g} s) / {per_step:.3g} "
           f"s/step = {fit:,} steps")
    if fit < QUICK_MIN_STEPS:
        return QUICK_MIN_STEPS, (f"{how}, below Quick's floor of {QUICK_MIN_STEPS} steps, so "
                                 f"{QUICK_MIN_STEPS} (longer than {target / 60:g} minutes "
                                 "here; a smaller resolution, batch or width is quicker)")
    if fit > max_steps:
        return max_steps, f"{how}, capped at this server's train_max_steps {max_steps:,}"
    return fit, how


def _describe(rate: dict[str, Any]) -> str:
    """How a rate was measured, in words."""
    cores = rate["cpu_seconds_per_step"] / rate["seconds_per_step"] \
        if rate["seconds_per_step"] > 0 else 0.0
    text = (f"measured just now: {rate['steps_timed']} training steps of this exact "
            f"configuration timed after {rate['warmup_steps']} warm-up step(s): "
            f"{rate['seconds_per_step']:.3g} s/step, {rate['images_per_second']:.3g} img/s, "
            f"{rate['threads']} thread(s) keeping {cores:.2g} core(s) busy "
            f"({rate['cpu_seconds_per_step']:.3g} CPU-s/step)")
    load = rate.get("load_average")
    if load is not None and load > rate["cpu_count"]:
        text += (f"; the machine was busy (load {load:.2g} on {rate['cpu_count']} cores), "
                 "so the figures include the other work")
    return text


class Estimator:
    """Runs probes one at a time in a subprocess and caches them per configuration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def estimate(self, settings: Settings, arch: str, dataset: str, preset: str, *,
                 steps: int | None = None, resolution: int | None = None,
                 batch_size: int | None = None,
                 config: dict[str, Any] | None = None) -> dict[str, Any]:
        """`preset`'s time on this machine, and every preset's with the same overrides."""
        from ..errors import ConfigError
        from ..persistence.datasets import resolve_dataset
        from ..training import TrainConfig

        ref = resolve_dataset(dataset)  # unknown dataset -> 404 before anything runs
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")

        def make_job(name: str, n: int | None) -> dict[str, Any]:
            job = preset_job(arch, name, steps=n, resolution=resolution,
                             batch_size=batch_size)
            job["config"] = with_overrides(job["config"], config or {})
            return job

        plans: dict[str, dict[str, Any]] = {}
        for name in PRESETS:
            job = make_job(name, steps)
            cfg = _train_config(job, dataset)
            try:
                tc = TrainConfig.from_dict(cfg)
                check_train_config(tc, settings, num_domains=dataset_domains(ref))
            except PolychromeError as e:  # the chosen one: 400; another: said in its row
                if name == preset:
                    raise
                plans[name] = {"error": str(e)}
                continue
            plans[name] = {"job": job, "cfg": cfg, "tc": tc}
        rates = self._rates(settings, [(_key(p["tc"]), p["cfg"]) for p in plans.values()
                                       if "cfg" in p])
        rows, chosen = [], {}
        for name, plan in plans.items():
            p = PRESETS[name]
            row: dict[str, Any] = {"name": name, "label": p.label}
            rate = rates.get(_key(plan["tc"])) if "cfg" in plan else None
            if isinstance(rate, PolychromeError):
                if name == preset:
                    raise rate
                plan = {"error": str(rate)}
            if "error" in plan:
                rows.append({**row, "error": plan["error"]})
                continue
            job, how = plan["job"], ("steps as asked" if steps else "the preset's steps")
            if p.target_seconds and steps is None:
                n, how = size_steps(p, rate, lambda k, nm=name: make_job(nm, k),
                                    settings.train_max_steps)
                job = make_job(name, n)
            tc = plan["tc"]
            row.update({"steps": job["steps"], "resolution": tc.resolution, "fit": tc.fit,
                        "batch_size": tc.batch_size,
                        "seconds_per_step": rate["seconds_per_step"],
                        "images_per_second": rate["images_per_second"],
                        "estimated_seconds": round(eta_seconds(rate, job), 1),
                        "sizing": how})
            rows.append(row)
            if name == preset:
                chosen = {"row": row, "rate": rate, "job": job}
        row, rate = chosen["row"], chosen["rate"]
        extras = [w for w, on in (("sample grids", True),
                                  ("evaluations", bool(chosen["job"]["config"].get(
                                      "eval_every")))) if on]
        basis = (f"{_describe(rate)}; plus {rate['setup_seconds']:.3g} s setup, "
                 f"{rate['warmup_seconds']:.3g} s warm-up and "
                 f"{checkpoint_count(chosen['job'])} checkpoints of "
                 f"{rate['checkpoint_seconds']:.2g} s; steps: {row['sizing']}; "
                 f"{' and '.join(extras)} add to it")
        return {"preset": preset, "model": arch, "dataset": dataset,
                **{k: row[k] for k in ("steps", "resolution", "fit", "batch_size",
                                       "estimated_seconds", "sizing")},
                **rate, "measured": True, "basis": basis, "presets": rows,
                "job": chosen["job"]}

    def _rates(self, settings: Settings, cfgs: list[tuple[str, dict[str, Any]]]
               ) -> dict[str, dict[str, Any] | PolychromeError]:
        """Each configuration's measured rate (cached ones reused; the rest measured in one
        subprocess, one configuration after another), or the error that stopped it."""
        out: dict[str, dict[str, Any] | PolychromeError] = {}
        with self._lock:
            todo: dict[str, dict[str, Any]] = {}
            for key, cfg in cfgs:
                hit = self._cache.get(key)
                if hit is not None and time.monotonic() - hit[0] < CACHE_TTL_S:
                    out[key] = hit[1]
                else:
                    todo[key] = cfg
            if todo:
                for key, result in zip(todo, self._run_probe(settings, list(todo.values())),
                                       strict=True):
                    out[key] = result
                    if not isinstance(result, PolychromeError):
                        self._cache[key] = (time.monotonic(), result)
        return out

    def _run_probe(self, settings: Settings,
                   cfgs: list[dict[str, Any]]) -> list[dict[str, Any] | PolychromeError]:
        env = {**os.environ, "POLYCHROME_HOME": str(settings.home)}
        t0 = time.monotonic()
        limit = PROBE_TIMEOUT_S * len(cfgs)
        try:
            proc = subprocess.run([sys.executable, "-m", "polychrome.serving.presets"],
                                  input=json.dumps(cfgs), capture_output=True, text=True,
                                  env=env, timeout=limit)
        except subprocess.TimeoutExpired:
            raise PolychromeError(f"measuring this configuration took longer than {limit:g} s",
                                  code="estimate_failed") from None
        try:
            results = json.loads(proc.stdout.strip().splitlines()[-1])
            assert isinstance(results, list) and len(results) == len(cfgs)
        except (ValueError, IndexError, AssertionError):
            log.warning("estimate probe failed: %s", proc.stderr[-2000:])
            raise PolychromeError("measuring this configuration failed (see the server log)",
                                  code="estimate_failed") from None
        log.info("measured %d configuration(s) in %.1f s", len(cfgs), time.monotonic() - t0)
        return [PolychromeError(r["error"]["message"], code=r["error"]["code"])
                if "error" in r else _rounded(r) for r in results]


# What a probe sets itself, and the step count: configurations that differ only there
# train at the same rate (one measurement serves presets that differ only in their steps).
_NOT_TIMED = frozenset(("steps", "sample_every", "sample_every_s", "checkpoint_every",
                        "eval_every", "log_every", "keep_last", "name"))


def _key(tc: Any) -> str:
    """A measurement's cache key: the run config as the run resolves it (a crop sets the
    resolution, whatever the preset's), less what the probe sets itself."""
    return json.dumps({k: v for k, v in tc.to_dict().items() if k not in _NOT_TIMED},
                      sort_keys=True, default=str)


def _rounded(rate: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in rate.items()}


ESTIMATOR = Estimator()


def _main() -> None:
    """Subprocess entry: a JSON list of run configs on stdin -> a JSON list on stdout, each
    the probe's timing or {"error": {code, message}}."""
    from ..settings import get_settings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    results: list[dict[str, Any]] = []
    for cfg in json.loads(sys.stdin.read()):
        try:
            results.append(probe(cfg, get_settings().home))
        except PolychromeError as e:
            results.append({"error": {"code": e.code, "message": str(e)}})
        except Exception as e:  # a configuration the checks let through but that cannot train
            log.warning("estimate probe failed", exc_info=True)
            results.append({"error": {"code": "estimate_failed", "message": (
                f"this configuration does not train on this machine: {type(e).__name__}: "
                f"{e}")}})
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    _main()
