"""Architecture registry: `@register_model("dcgan")`, `create_model`, `list_models`."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError
from ..registry import Registry

MODELS: Registry[type] = Registry("model", error=ModelError, code="unknown_model",
                                  name_attr="name")


def register_model(name: str):
    """Class decorator: make a `GANModel` subclass creatable by `name` (sets `cls.name`)."""
    return MODELS.register(name)


def get_model_class(name: str) -> type:
    """The class registered as `name`; an unknown name is a ModelError (unknown_model)."""
    return MODELS.get(name)


def create_model(name: str, **config: Any):
    """Build a model from its registry name and config overrides."""
    cls = get_model_class(name)
    return cls(cls.config_class.from_dict(config))


def list_models(family: str | None = None) -> list[str]:
    return MODELS.names(None if family is None else lambda c: c.family == family)
