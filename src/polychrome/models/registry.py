"""Architecture registry: `@register_model("dcgan")`, `create_model`, `list_models`."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError

_REGISTRY: dict[str, type] = {}


def register_model(name: str):
    """Class decorator: make a `GANModel` subclass creatable by `name`."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_model_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ModelError(f"unknown model {name!r}; known models: {known}",
                         code="unknown_model") from None


def create_model(name: str, **config: Any):
    """Build a model from its registry name and config overrides."""
    cls = get_model_class(name)
    return cls(cls.config_class.from_dict(config))


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, c in _REGISTRY.items() if family is None or c.family == family)
