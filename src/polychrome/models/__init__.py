"""Networks: the registry of architectures and the trained-model store.

Importing this package registers every built-in architecture.
"""

from .base import GANModel, ModelConfig
from .registry import create_model, get_model_class, list_models, register_model

__all__ = [
    "GANModel",
    "ModelConfig",
    "create_model",
    "get_model_class",
    "list_models",
    "register_model",
]

# Architectures register themselves on import.
from . import zoo  # noqa: E402,F401
