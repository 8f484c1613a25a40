"""Polychrome: a self-hosted platform for GAN-based, style-diverse image generation."""

__version__ = "0.1.0"
