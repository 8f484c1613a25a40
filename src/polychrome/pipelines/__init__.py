"""Inference pipelines shared by every surface (CLI, REST API, web page)."""

from ..sampling import GeneratedImage
from .generate import generate, regenerate, save_images

__all__ = ["GeneratedImage", "generate", "regenerate", "save_images"]
