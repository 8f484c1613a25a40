"""Structured pruning: whole channels removed, so the network really gets smaller and faster.

A hidden channel whose removal leaves every shape outside it unchanged is prunable: the
inner channels of a residual block (conv -> norm -> act -> conv, the block's input and
output stay the same width) and, in pix2pix, the full-resolution tail's channels (tail
conv -> ReLU -> the per-scale heads). Each channel is scored by an L1 norm: what writes it
(the first conv's filter, or the instance norm's |gamma| when one follows, since the norm
cancels the filter's scale) times what reads it (the L1 norm of the next conv's weights on
that channel); the lowest `fraction` go. Models: pix2pix and CycleGAN (their generators);
StarGAN's AdaIN blocks and StyleGAN's modulated convs are not pruned here.

No fine-tuning follows: the pruned network is the trained one minus its weakest channels,
and `benchmarks/compression.py` reports what that costs in quality. A pruned model lives in
memory only (its config cannot describe the narrower layers), for measurement.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import ModelError
from ..models.base import GANModel
from ..models.layers import InstanceNorm2d

PRUNABLE = ("pix2pix", "cyclegan")


def _keep(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices (sorted) of the channels kept: the highest scores, at least one."""
    n = scores.numel()
    k = max(1, n - math.floor(n * fraction))
    return torch.sort(torch.topk(scores, k).indices).values


def _conv_out(conv: nn.Conv2d, idx: torch.Tensor) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, len(idx), conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[idx])
    return new


def _conv_in(conv: nn.Conv2d, idx: torch.Tensor) -> nn.Conv2d:
    new = nn.Conv2d(len(idx), conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _norm(norm: nn.Module, idx: torch.Tensor) -> nn.Module:
    if not isinstance(norm, InstanceNorm2d):
        return norm  # Identity: nothing per channel
    new = InstanceNorm2d(len(idx), eps=norm.eps, affine=norm.affine)
    if norm.affine:
        with torch.no_grad():
            new.weight.copy_(norm.weight[idx])
            new.bias.copy_(norm.bias[idx])
    return new


def _l1_out(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))  # (Cout,)


def _l1_in(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().sum(dim=(0, 2, 3))  # (Cin,)


def prune_residual(body: nn.Sequential, fraction: float) -> None:
    """The hidden channels between a residual body's first two convs (in place)."""
    convs = [i for i, m in enumerate(body) if isinstance(m, nn.Conv2d)]
    a, b = convs[0], convs[1]
    norm_i = next((i for i in range(a + 1, b) if isinstance(body[i], InstanceNorm2d)), None)
    if norm_i is not None and body[norm_i].affine:
        writes = body[norm_i].weight.detach().abs()
    else:
        writes = _l1_out(body[a])
    idx = _keep(writes * _l1_in(body[b]), fraction)
    body[a] = _conv_out(body[a], idx)
    if norm_i is not None:
        body[norm_i] = _norm(body[norm_i], idx)
    body[b] = _conv_in(body[b], idx)


def _prune_pix2pix_tail(gen: nn.Module, fraction: float) -> None:
    tail = gen.tail[0]
    reads = sum(_l1_in(h) for h in gen.heads.values())
    idx = _keep(_l1_out(tail) * reads, fraction)
    gen.tail[0] = _conv_out(tail, idx)
    for key in list(gen.heads.keys()):
        gen.heads[key] = _conv_in(gen.heads[key], idx)


def prune_model(model: GANModel, fraction: float) -> GANModel:
    """A copy of `model` with `fraction` of every prunable hidden channel set removed."""
    if not 0.0 <= fraction < 1.0:
        raise ModelError(f"prune fraction must be in [0, 1), got {fraction}", code="bad_request")
    if model.name not in PRUNABLE:
        raise ModelError(f"structured pruning covers {', '.join(PRUNABLE)}, not {model.name}",
                         code="runtime_unsupported")
    pruned = copy.deepcopy(model).eval()
    if model.name == "pix2pix":
        gen = pruned.generator
        for block in gen.middle:
            prune_residual(block.body, fraction)
        _prune_pix2pix_tail(gen, fraction)
    else:
        for gen in (pruned.generator, pruned.generator_ba):
            for m in gen.modules():
                if type(m).__name__ == "_ResidualBlock":
                    prune_residual(m.body, fraction)
    return pruned


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
