"""Run directories, run configs, datasets and models as a training run sees them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, NotFound
from ..settings import get_settings
from ..utils.atomic import atomic_write_text
from .checkpoint import latest_checkpoint, load_checkpoint
from .config import TrainConfig, dump_yaml

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass
class DatasetInfo:
    name: str
    version: int | None
    path: Path

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.version}" if self.version is not None else self.name


def new_run_dir(model: str, dataset: str) -> Path:
    """$HOME/runs/<UTC timestamp>-<model>-<dataset>, de-collided with a suffix."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = _SAFE.sub("_", f"{stamp}-{model}-{dataset}")
    runs = get_settings().runs_dir
    path, i = runs / base, 1
    while path.exists():
        i += 1
        path = runs / f"{base}-{i}"
    return path


def check_new_run_dir(path: Path) -> None:
    """A fresh run may use an empty or missing dir, never one holding another run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run dir {path} exists and is not a directory")
    if (path / CHECKPOINTS_DIR).exists() or (path / CONFIG_NAME).exists():
        raise ConfigError(f"{path} already holds a run; continue it with --resume {path}")


def write_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write_text(run_dir / CONFIG_NAME, dump_yaml(cfg))


def read_run_config(run_dir: str | Path) -> tuple[TrainConfig, Path | None]:
    """The resolved config of a run and its latest checkpoint (None: no checkpoint yet)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotFound(f"no run directory at {run_dir}")
    ckpt = latest_checkpoint(run_dir / CHECKPOINTS_DIR)
    if ckpt is not None:
        _, state = load_checkpoint(ckpt)
        return TrainConfig.from_dict(state["config"]), ckpt
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise NotFound(f"{run_dir} is not a training run (no {CONFIG_NAME}, no checkpoint)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    return TrainConfig.from_dict(data or {}), None


def resolve_dataset(dataset: str, version: int | None) -> DatasetInfo:
    """Name / "name:version" / path -> its version dir (NotFound if there is none)."""
    from ..data.cache import resolve_dataset_dir

    path = resolve_dataset_dir(dataset, version)
    name = re.sub(r":\d+$", "", dataset) if "/" not in dataset else path.parent.name
    ver = int(path.name) if (path.name.isascii() and path.name.isdigit()) else version
    return DatasetInfo(name=name, version=ver, path=path)


def split_dataset_spec(dataset: str, version: int | None) -> tuple[str, int | None]:
    """'emoji:2' -> ('emoji', 2); an explicit version must agree."""
    m = re.fullmatch(r"(.+):(\d+)", dataset or "")
    if not m:
        return dataset, version
    if version is not None and version != int(m.group(2)):
        raise ConfigError(f"dataset {dataset!r} disagrees with dataset_version {version}")
    return m.group(1), int(m.group(2))


def model_kwargs(cfg: TrainConfig, num_domains: int) -> dict[str, Any]:
    """create_model() arguments: the run's resolution and the dataset's styles by default."""
    kw = dict(cfg.model_config)
    if kw.get("resolution", cfg.resolution) != cfg.resolution:
        raise ConfigError(f"model_config.resolution {kw['resolution']} disagrees with "
                          f"resolution {cfg.resolution}; set only resolution")
    kw["resolution"] = cfg.resolution
    kw.setdefault("num_domains", num_domains)
    if kw["num_domains"] not in (1, num_domains):
        raise ConfigError(f"model_config.num_domains={kw['num_domains']} but the dataset has "
                          f"{num_domains} styles (use {num_domains}, or 1 for unconditional)")
    return kw


def default_evaluator(packed: Any, cfg: TrainConfig, dataset: DatasetInfo | None,
                      device: Any) -> Callable[[Any, int], dict[str, float]] | None:
    """polychrome.metrics' training evaluator (FID/KID...), if that package provides one."""
    try:
        from ..metrics import make_training_evaluator
    except ImportError:
        log.warning("eval_every=%d but polychrome.metrics provides no training evaluator; "
                    "periodic evaluation is off", cfg.eval_every)
        return None
    # With the dataset's path the offline feature network is the dataset's saved one,
    # so numbers compare across runs.
    return make_training_evaluator(packed, tuple(cfg.eval_metrics), cfg.eval_n,
                                   cfg.eval_extractor, dataset=dataset.path if dataset else None,
                                   seed=cfg.seed, device=device)
