"""The run config: one dataclass, loadable from YAML, overridable by CLI flags.

Fields left as None are "use the model's `train_defaults`"; `resolve_config`
fills them in, and the RESOLVED config is what a run writes to
runs/<id>/config.yaml and into every checkpoint's JSON.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..registry import did_you_mean

AMP_MODES = ("off", "auto", "bf16", "fp16")
FITS = ("crop", "pad", "crops")  # whole picture squared by crop / pad, or random crops
SPLITS = ("all", "train", "heldout")
DEVICE_RE = re.compile(r"(auto|cpu|mps|cuda(:[0-9]{1,4})?)\Z")  # the forms pick_device reads

# Keys a model's `train_defaults` may supply (a None in the config means "take the default").
DEFAULTED_KEYS = (
    "loss", "lr_g", "lr_d", "betas", "n_critic", "gp_weight", "r1_gamma", "r1_interval",
    "ema_decay", "batch_size", "mixing_prob", "diffaugment",
)
# Used when neither the config nor the model says anything.
FALLBACK_DEFAULTS: dict[str, Any] = {
    "loss": "ns", "lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.999], "n_critic": 1,
    "gp_weight": 0.0, "r1_gamma": 0.0, "r1_interval": 1, "ema_decay": 0.999, "batch_size": 32,
    "mixing_prob": 0.0, "diffaugment": "",
}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (JSON/YAML-able scalars, lists and dicts)."""

    model: str = ""
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = ""
    dataset_version: int | None = None
    resolution: int = 32  # model resolution; in crops mode, the crop side
    fit: str = "crop"  # crop | pad: whole pictures squared; crops: random crops (data/crops.py)
    crop: int | None = None  # crop side: sets fit "crops" and resolution = crop
    scale: list[int] | None = None  # crops: [lo, hi] shorter side (px) pictures are cut at
    split: str = "all"
    steps: int = 10_000  # generator updates (one step = n_critic D updates + 1 G update)
    seed: int = 0
    # -- optimisation (None -> model.train_defaults) --------------------------------
    batch_size: int | None = None  # per process
    loss: str | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    betas: list[float] | None = None
    n_critic: int | None = None
    gp_weight: float | None = None
    r1_gamma: float | None = None
    r1_interval: int | None = None
    ema_decay: float | None = None
    ema_rampup: float = 0.05  # EMA half-life ramps with images seen (StyleGAN2-ADA), 0 = off
    mixing_prob: float | None = None
    diffaugment: str | None = None  # DiffAugment policy, "" = off
    ada: bool = False  # adaptive augmentation probability (needs a policy)
    ada_target: float = 0.6
    ada_speed_imgs: int = 500_000
    instance_noise: float = 0.0  # initial sigma of Gaussian noise on D inputs
    instance_noise_steps: int | None = None  # anneal sigma linearly to 0 over this many steps
    grad_clip: float | None = None  # max global grad norm per network, None = off
    # Family-specific knobs a trainer reads (e.g. translation loss weights); free-form.
    trainer_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_factor: float = 0.0
    # -- bookkeeping -------------------------------------------------------------------
    checkpoint_every: int = 1000
    keep_last: int = 3
    sample_every: int = 500
    # Also a grid once this many seconds passed since the last one, the wait doubling after
    # each (30 s, 1 min, 2 min, ...): a first preview within a minute, a few dozen at most.
    sample_every_s: float = 30.0  # 0 = step-based grids only
    sample_cols: int = 8
    log_every: int = 10
    progress_every_s: float = 10.0  # without a progress bar: a log line this often (0: each step)
    eval_every: int = 0  # 0 = no periodic evaluation
    eval_metrics: list[str] = dataclasses.field(default_factory=lambda: ["fid"])
    eval_n: int = 1000
    eval_extractor: str = "offline"
    best_metric: str = "fid"  # lower is better
    collapse_ratio: float = 0.5  # warn when diversity < ratio * its running max
    # -- execution ---------------------------------------------------------------------
    device: str = "auto"
    # off | auto (CUDA: bf16 where supported, else fp16; CPU: bf16 on CPUs with native bf16
    # instructions, else off) | bf16 | fp16 (CUDA only)
    amp: str = "auto"
    # NHWC images and conv weights: on CUDA; on a CPU for models whose train_defaults set
    # cpu_channels_last (where it was measured to pay)
    channels_last: bool = True
    deterministic: bool = True
    name: str | None = None  # model-store name (default "<dataset>-<model>")

    # -- conversions -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            named = ", ".join(f"{k}{did_you_mean(k, names)}" for k in unknown)
            raise ConfigError(
                f"unknown config key(s): {named}; valid keys: {', '.join(sorted(names))}"
            )
        d = dict(d)
        if d.get("fit") == "whole":
            d["fit"] = "crop"
        if d.get("crop") is not None:  # --crop N: crops mode at N px
            if d.get("fit") not in (None, "crop", "crops"):  # "crop" is the default
                raise ConfigError(f"crop {d['crop']} trains on random crops: it cannot be "
                                  f"combined with fit {d['fit']!r}")
            d["fit"], d["resolution"] = "crops", d["crop"]
        cfg = cls(**d)
        cfg.validate(resolved=False)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with `overrides` applied (None values are ignored: "flag not given")."""
        d = self.to_dict()
        d.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(d)

    def validate(self, *, resolved: bool = True) -> None:
        from .losses import LOSSES  # the registries (imported here: they import torch)
        from .schedules import SCHEDULES

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        self._check_types()
        need(isinstance(self.model_config, dict), "model_config must be a mapping")
        need(isinstance(self.trainer_options, dict), "trainer_options must be a mapping")
        for key in ("model_config", "trainer_options"):
            where = non_finite(getattr(self, key), key)
            need(where is None, f"{where} must be a finite number (not NaN or infinite)")
        need(bool(DEVICE_RE.match(self.device)),
             f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        need(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        need(self.resolution >= 8, f"resolution must be >= 8, got {self.resolution}")
        need(self.fit in FITS, f"fit must be one of {FITS}, got {self.fit!r}")
        if self.fit == "crops":
            from ..data.crops import check_scale, default_scale

            if self.crop is not None:
                need(self.crop == self.resolution, f"crop {self.crop} and resolution "
                     f"{self.resolution} disagree (set only crop)")
            check_scale(self.resolution, self.scale if self.scale is not None
                        else default_scale(self.resolution))
        else:
            need(self.scale is None, "scale applies to crops mode only (fit: crops)")
        need(self.split in SPLITS, f"split must be one of {SPLITS}, got {self.split!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {tuple(SCHEDULES)}, got "
             f"{self.schedule!r}{did_you_mean(self.schedule, SCHEDULES)}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(self.checkpoint_every >= 0 and self.sample_every >= 0 and self.eval_every >= 0,
             "checkpoint_every, sample_every and eval_every must be >= 0")
        need(self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        for key in ("sample_every_s", "progress_every_s"):
            need(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        need(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        need(0.0 <= self.min_lr_factor <= 1.0, "min_lr_factor must be in [0, 1]")
        need(self.instance_noise >= 0.0, "instance_noise must be >= 0")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 (or null)")
        need(isinstance(self.eval_metrics, list), "eval_metrics must be a list of metric names")
        need(self.sample_cols >= 1, f"sample_cols must be >= 1, got {self.sample_cols}")
        need(self.eval_n >= 1, f"eval_n must be >= 1, got {self.eval_n}")
        need(self.ema_rampup >= 0.0, "ema_rampup must be >= 0")
        need(0.0 <= self.ada_target <= 1.0, "ada_target must be in [0, 1]")
        need(self.ada_speed_imgs >= 1, "ada_speed_imgs must be >= 1")
        need(self.instance_noise_steps is None or self.instance_noise_steps >= 0,
             "instance_noise_steps must be >= 0")
        need(0.0 <= self.collapse_ratio <= 1.0, "collapse_ratio must be in [0, 1]")
        for key in ("lr_g", "lr_d", "gp_weight", "r1_gamma"):  # 0 = frozen / off
            value = getattr(self, key)
            need(value is None or value >= 0, f"{key} must be >= 0, got {value}")
        if self.mixing_prob is not None:
            need(0.0 <= self.mixing_prob <= 1.0, "mixing_prob must be in [0, 1]")
        if self.loss is not None:
            need(self.loss in LOSSES, f"loss must be one of {tuple(LOSSES)}, got "
                 f"{self.loss!r}{did_you_mean(self.loss, LOSSES)}")
        if self.batch_size is not None:
            need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        if self.n_critic is not None:
            need(self.n_critic >= 1, "n_critic must be >= 1")
        if self.r1_interval is not None:
            need(self.r1_interval >= 1, "r1_interval must be >= 1")
        if self.betas is not None:
            need(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                 f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.ema_decay is not None:
            need(0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)")
        if resolved:
            need(bool(self.model), "no model given")
            need(bool(self.dataset), "no dataset given")
            for key in DEFAULTED_KEYS:
                need(getattr(self, key) is not None, f"{key} was not resolved")
            need(not self.ada or bool(self.diffaugment),
                 "ada needs an augmentation policy (set diffaugment, e.g. 'color,translation,cutout')")

    def _check_types(self) -> None:
        """Each field holds what its annotation says (JSON / YAML / CLI input is untyped):
        a wrong type is a ConfigError naming the key, never a TypeError later, and every
        number is finite. An int is a valid float; a bool is neither."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = type_problem(hints[f.name], value)
            if want is not None:
                raise ConfigError(f"{f.name} must be {want}, got {value!r}")


def type_problem(hint: Any, value: Any) -> str | None:
    """None if `value` fits the annotation `hint`, else what it should have been (for
    untyped JSON / YAML input: the run config here, trainer options in trainers/options.py)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        problems = [type_problem(a, value) for a in inner]
        if any(p is None for p in problems):
            return None
        return " or ".join(p for p in problems if p) + (" (or null)" if type(None) in args
                                                         else "")
    if hint is Any:
        return None
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else "a whole number"
    if hint is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return "a number"
        return None if math.isfinite(value) else "a finite number (not NaN or infinite)"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if origin is list:
        if not isinstance(value, list):
            return "a list"
        (item,) = args or (Any,)
        for v in value:
            problem = type_problem(item, v)
            if problem is not None:
                return f"a list of {problem.removeprefix('a ').removeprefix('an ')}s"
        return None
    if origin is tuple:  # fixed length, read from a YAML / JSON list
        kinds = [(type_problem(a, object()) or "value").removeprefix("a ") for a in args]
        want = (f"a list of {len(args)} {kinds[0]}s" if len(set(kinds)) == 1
                else f"a list of {len(args)} values ({', '.join(kinds)})")
        if not isinstance(value, list | tuple) or len(value) != len(args):
            return want
        bad = any(type_problem(a, v) is not None for a, v in zip(args, value, strict=True))
        return want if bad else None
    if origin is dict:
        return None if isinstance(value, dict) else "a mapping"
    return None


def non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinite number inside `value` (dicts, lists), if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "value"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = non_finite(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML run config into a dict (keys are checked by TrainConfig.from_dict)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    return data


def resolve_config(cfg: TrainConfig, train_defaults: dict[str, Any]) -> TrainConfig:
    """Fill every None optimisation field from the model's defaults (then the fallbacks)."""
    d = cfg.to_dict()
    for key in DEFAULTED_KEYS:
        if d[key] is None:
            d[key] = train_defaults.get(key, FALLBACK_DEFAULTS[key])
    d["betas"] = [float(b) for b in d["betas"]]
    for key in ("lr_g", "lr_d", "gp_weight", "r1_gamma", "ema_decay", "mixing_prob"):
        d[key] = float(d[key])
    d["diffaugment"] = d["diffaugment"] or ""
    if d["instance_noise_steps"] is None:
        d["instance_noise_steps"] = d["steps"]
    if d["name"] is None:
        d["name"] = default_model_name(d["dataset"], d["model"])
    if d["fit"] == "crops":
        from ..data.crops import default_scale

        d["crop"] = d["resolution"]
        d["scale"] = list(d["scale"] or default_scale(d["resolution"]))
    out = TrainConfig.from_dict(d)
    out.validate(resolved=True)
    return out


def default_model_name(dataset: str, model: str) -> str:
    """"<dataset>-<model>", from a dataset name, "name:version" or a version dir path."""
    name = re.sub(r":\d+$", "", dataset)
    if "/" in name or os.sep in name:
        p = Path(name)
        name = p.parent.name if (p.name.isascii() and p.name.isdigit()) else p.name
    return f"{name}-{model}"


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=True)
