"""Seeds and RNG state capture, so a resumed run draws exactly the numbers it would have."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for (seed, parts...): independent streams from one user seed."""
    text = ":".join(["polychrome-train", str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & ((1 << 63) - 1)


def capture_rng(noise_gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This process's RNG states as uint8 tensors: global CPU, global CUDA (device), noise gen."""
    states = {"cpu": torch.get_rng_state(), "noise": noise_gen.get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(states: dict[str, torch.Tensor], noise_gen: torch.Generator,
                device: torch.device) -> None:
    torch.set_rng_state(states["cpu"].to("cpu", torch.uint8))
    noise_gen.set_state(states["noise"].to("cpu", torch.uint8))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].to("cpu", torch.uint8), device)
