"""Typed trainer options: the `trainer_options` mapping of a run config, checked.

Each trainer declares what it reads beyond the run config's own fields (loss weights,
a pool size, the mapping network's lr, ...) as a frozen dataclass with types, defaults
and a comment per field. `build` turns the untyped mapping from YAML / JSON / a request
into that dataclass and refuses, with a one-line ConfigError:

- a key the trainer does not read (with the closest valid key and the list of them; a
  run-config key put under trainer_options is pointed back to the top level),
- a value of the wrong type, or a number that is NaN / infinite,
- a value out of range (each class's `check`).

`options_for_model(name, given)` builds the options of the trainer that would train
model `name`, without building the model: the API refuses a bad job at submission.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from ...errors import ConfigError
from ...registry import did_you_mean
from ..config import TrainConfig, type_problem

OptionsT = TypeVar("OptionsT", bound="TrainerOptions")


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """Base class: no options. A trainer that reads none refuses every key."""

    @classmethod
    def keys(cls) -> list[str]:
        return sorted(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls: type[OptionsT], given: Mapping[str, Any] | None, *,
              who: str = "trainer") -> OptionsT:
        """The options from a run config's `trainer_options` (defaults for what is missing);
        `who` (the model's name) starts every error message."""
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"trainer_options must be a mapping, got {given!r}")
        valid = cls.keys()
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in given.items():
            if key not in valid:
                raise ConfigError(_unknown_key(key, valid, who))
            hint = hints[key]
            problem = _non_finite(value) or type_problem(hint, value)
            if problem is not None:
                raise ConfigError(f"{who}: trainer_options.{key} must be {problem}, "
                                  f"got {value!r}")
            values[key] = _coerce(hint, value)
        options = cls(**values)
        options.check(who)
        return options

    def check(self, who: str) -> None:
        """Ranges and choices (the types are already right)."""


def _unknown_key(key: object, valid: list[str], who: str) -> str:
    if not valid:
        msg = f"{who} takes no trainer_options (its trainer reads none), got {key!r}"
    else:
        msg = (f"{who}: unknown trainer option {key!r}{did_you_mean(key, valid)}; "
               f"valid trainer_options: {', '.join(valid)}")
    if key in {f.name for f in dataclasses.fields(TrainConfig)}:
        msg += f" ({key} is a run config key: set it at the top level, not in trainer_options)"
    return msg


def _non_finite(value: Any) -> str | None:
    items = value if isinstance(value, list | tuple) else [value]
    bad = any(isinstance(v, float) and not math.isfinite(v) for v in items)
    return "a finite number (not NaN or infinite)" if bad else None


def _coerce(hint: Any, value: Any) -> Any:
    """An int where a float is declared becomes a float; a list for a tuple a tuple."""
    if hint is float:
        return float(value)
    if typing.get_origin(hint) is tuple:
        return tuple(_coerce(a, v) for a, v in zip(typing.get_args(hint), value, strict=True))
    return value


def need(cond: bool, who: str, message: str) -> None:
    """For `check`: refuse with `who: message` unless `cond`."""
    if not cond:
        raise ConfigError(f"{who}: trainer_options.{message}")


def options_for_model(model: str, given: Mapping[str, Any] | None) -> TrainerOptions:
    """The checked options of the trainer for model architecture `model` (unknown
    architecture: ModelError; unknown family: ConfigError)."""
    from ...models.registry import get_model_class
    from .base import get_trainer_class

    cls = get_model_class(model)
    trainer = get_trainer_class(cls.family).for_model(model)
    return trainer.options_class.build(given, who=model)
