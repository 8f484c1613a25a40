"""Base class for every GAN: constructor = typed config, save/load = safetensors + JSON."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError
from ..utils.atomic import atomic_path, atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclasses.dataclass
class ModelConfig:
    """Fields every architecture shares; subclasses add their own."""

    resolution: int = 32  # output side in pixels (square)
    channels: int = 3  # image channels
    num_domains: int = 1  # number of style labels; 1 = unconditional

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ModelError(
                f"unknown config key(s) for {cls.__name__}: {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(names))}",
                code="bad_config",
            )
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        self._check_types()
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ModelError(f"resolution must be a power of two >= 8, got {self.resolution}",
                             code="bad_config")
        if self.channels not in (1, 3, 4):
            raise ModelError(f"channels must be 1, 3 or 4, got {self.channels}", code="bad_config")
        if self.num_domains < 1:
            raise ModelError("num_domains must be >= 1", code="bad_config")


    def _check_types(self) -> None:
        """Reject wrong scalar types early (JSON/YAML/CLI input); an int is a valid float."""
        try:
            hints = typing.get_type_hints(type(self))
        except (NameError, TypeError):  # annotations we cannot resolve: skip the check
            return
        for f in dataclasses.fields(self):
            want, value = hints.get(f.name), getattr(self, f.name)
            if want not in (int, float, bool, str):
                continue
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                raise ModelError(f"config key {f.name!r} must be {want.__name__}, "
                                 f"got {value!r}", code="bad_config")


class GANModel(nn.Module):
    """A GAN = its networks as submodules; it computes no losses.

    Subclasses set `config_class`, `family` ("noise" | "translation" | "paired"),
    `inference_modules` (the networks a trained model needs to generate; these
    are EMA-averaged during training and exported to the model store) and
    `train_defaults` (loss and optimiser settings the trainer starts from).
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "noise"
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    inference_modules: ClassVar[tuple[str, ...]] = ("generator",)
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()  # also when built directly, not only via from_dict
        self.config = config
        # Free-form metadata saved beside the config (e.g. style names).
        self.meta: dict[str, Any] = {}
        # Set by from_pretrained: the networks whose weights were loaded.
        self.loaded_modules: tuple[str, ...] = ()

    # -- persistence -----------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, *, modules: tuple[str, ...] | None = None,
                        meta: dict[str, Any] | None = None) -> Path:
        """Write config.json + model.safetensors (only `modules`, default: all)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = tuple(modules) if modules is not None else tuple(n for n, _ in self.named_children())
        state: dict[str, torch.Tensor] = {}
        for n in names:
            for k, v in getattr(self, n).state_dict().items():
                # clone: safetensors refuses tensors that share storage
                state[f"{n}.{k}"] = v.detach().to("cpu").contiguous().clone()
        meta_all = {**self.meta, **(meta or {})}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "polychrome", "model": self.name})
        atomic_write_json(directory / CONFIG_NAME, {
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "family": self.family,
            "config": self.config.to_dict(),
            "modules": list(names),
            "meta": meta_all,
        })
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str | torch.device = "cpu"):
        """Rebuild from config.json and load the saved networks (strictly)."""
        from .registry import get_model_class

        directory = Path(directory)
        cfg_path = directory / CONFIG_NAME
        if not cfg_path.is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise ModelError(f"{directory} is not a model directory "
                             f"(needs {CONFIG_NAME} and {WEIGHTS_NAME})", code="not_a_model")
        try:
            spec = json.loads(cfg_path.read_text())
            arch = spec["model"]
            config = spec["config"]
            modules = spec.get("modules", [])
            meta = spec.get("meta", {})
            if not (isinstance(arch, str) and isinstance(config, dict)
                    and isinstance(modules, list) and isinstance(meta, dict)):
                raise ValueError("wrong field types")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise ModelError(f"{cfg_path} is not a valid model config: {e}",
                             code="not_a_model") from None
        check_format_version(spec.get("format_version", 1), FORMAT_VERSION, f"model {cfg_path}")
        klass = get_model_class(arch)
        if cls is not GANModel and not issubclass(klass, cls):
            raise ModelError(f"{directory} holds a {arch!r}, not a {cls.name or cls.__name__}",
                             code="wrong_model")
        try:
            model = klass(klass.config_class.from_dict(config))
        except TypeError as e:  # e.g. a field missing a default
            raise ModelError(f"bad config in {cfg_path}: {e}", code="bad_config") from None
        model.meta = dict(meta)
        try:
            state = load_file(str(directory / WEIGHTS_NAME), device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ModelError(f"cannot read {directory / WEIGHTS_NAME}: {e}",
                             code="bad_weights") from None
        for n in modules:
            sub = {k[len(n) + 1:]: v for k, v in state.items() if k.startswith(f"{n}.")}
            net = getattr(model, str(n), None)
            if not isinstance(net, nn.Module):
                raise ModelError(f"{arch!r} has no network {n!r} (in {cfg_path})",
                                 code="bad_weights")
            problem = _state_mismatch(net, sub)
            if problem:
                raise ModelError(f"weights in {directory} do not match {arch!r} ({n}): {problem}",
                                 code="bad_weights")
            net.load_state_dict(sub, strict=True)
        model.loaded_modules = tuple(modules)
        return model.to(map_location)

    # -- conveniences ----------------------------------------------------------------
    @property
    def style_names(self) -> list[str]:
        names = self.meta.get("styles")
        if names:
            return list(names)
        return [str(i) for i in range(self.config.num_domains)]


def check_format_version(found: Any, supported: int, what: str) -> None:
    """Refuse a file written by a newer Polychrome (a format this release cannot read)."""
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise ModelError(f"{what}: format_version {found!r} is not a valid version",
                         code="not_a_model")
    if found > supported:
        raise ModelError(f"{what} has format_version {found}, newer than this release "
                         f"reads ({supported}): upgrade Polychrome to load it",
                         code="newer_format")


def _state_mismatch(net: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """One-line description of how `state` differs from `net`'s state_dict ('' if it fits)."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} with a different shape (e.g. {k}: saved "
                     f"{tuple(state[k].shape)}, expected {tuple(expected[k].shape)})")
    return "; ".join(parts)
