"""What is exported for each model: its inference networks as `GraphSpec`s.

Each graph wraps a zoo network with the keyword arguments inference always uses (constant
noise, truncation 1, no w_avg update) so its forward takes and returns plain tensors.
Example inputs have batch 2 and unequal, stride-aligned sides: an axis of size 1, or two
axes of equal size, could be fixed or tied together by the exporter.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from ..models.base import GANModel
from .onnx_export import GraphSpec

IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}
BATCH_AXIS = {0: "batch"}


class _Noise(nn.Module):
    def __init__(self, net: nn.Module, **kw: object):
        super().__init__()
        self.net, self.kw = net, kw

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z, None, **self.kw)


class _NoiseLabelled(_Noise):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(z, y, **self.kw)


class _Synthesis(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.net(ws, noise_mode="const")


class _Encode(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.net.encode(x)
        return (c.features, *c.skips)


class _Decode(nn.Module):
    """decode(Content(features, skips, source), s) with its parts as separate inputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.n_skips = len(net.skip_levels)

    def forward(self, features: torch.Tensor, s: torch.Tensor, *rest: torch.Tensor
                ) -> torch.Tensor:
        from ..models.zoo.stargan import Content

        skips = tuple(rest[:self.n_skips])
        source = rest[self.n_skips] if self.net.rgb_skip else None
        return self.net.decode(Content(features, skips, source), s)


class _Call(nn.Module):
    """net(*inputs, *fixed): a labelled network or a restoration head at one scale."""

    def __init__(self, net: nn.Module, *fixed: object):
        super().__init__()
        self.net, self.fixed = net, fixed

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs, *self.fixed)


def _picture(batch: int, channels: int, multiple: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, channels, 3 * multiple, 5 * multiple, generator=g) * 2 - 1


def _labels(num_domains: int) -> torch.Tensor:
    return torch.tensor([0, num_domains - 1], dtype=torch.int64)


def _z(dim: int) -> torch.Tensor:
    return torch.randn(2, dim, generator=torch.Generator().manual_seed(0))


def _noise_specs(model: GANModel) -> list[GraphSpec]:
    cfg, gen = model.config, model.generator
    cond = cfg.num_domains > 1
    if model.name == "stylegan":
        m = gen.mapping
        z = _z(cfg.z_dim)
        mapping = GraphSpec("generator.mapping",
                            _NoiseLabelled(m, update_w_avg=False) if cond
                            else _Noise(m, update_w_avg=False),
                            (z, _labels(cfg.num_domains)) if cond else (z,),
                            ("z", "y") if cond else ("z",),
                            (BATCH_AXIS, BATCH_AXIS) if cond else (BATCH_AXIS,), m)
        ws = torch.randn(2, cfg.num_ws, cfg.w_dim, generator=torch.Generator().manual_seed(0))
        synth = GraphSpec("generator.synthesis", _Synthesis(gen.synthesis), (ws,), ("ws",),
                          (BATCH_AXIS,), gen.synthesis)
        return [mapping, synth]
    z = _z(cfg.z_dim)
    net = _NoiseLabelled(gen, noise_mode="const") if cond else _Noise(gen, noise_mode="const")
    return [GraphSpec("generator", net, (z, _labels(cfg.num_domains)) if cond else (z,),
                      ("z", "y") if cond else ("z",),
                      (BATCH_AXIS, BATCH_AXIS) if cond else (BATCH_AXIS,), gen)]


def _stargan_specs(model: GANModel) -> list[GraphSpec]:
    cfg, gen = model.config, model.generator
    x = _picture(2, cfg.channels, 2 ** cfg.g_down)
    with torch.no_grad():
        content = gen.encode(x)
    s = torch.randn(2, cfg.style_dim, generator=torch.Generator().manual_seed(1))
    parts = (content.features, s, *content.skips, *((x,) if gen.rgb_skip else ()))
    names = ("features", "s", *(f"skip{i}" for i in range(len(content.skips))),
             *(("source",) if gen.rgb_skip else ()))
    dec_axes = tuple(BATCH_AXIS if n == "s" else IMAGE_AXES for n in names)
    g = torch.Generator().manual_seed(2)
    ref = torch.rand(2, cfg.channels, cfg.resolution, cfg.resolution, generator=g) * 2 - 1
    y = _labels(cfg.num_domains)
    return [
        GraphSpec("generator.encode", _Encode(gen), (x,), ("x",), (IMAGE_AXES,), gen),
        GraphSpec("generator.decode", _Decode(gen), parts, names, dec_axes, gen),
        GraphSpec("mapping", _Call(model.mapping), (_z(cfg.latent_dim), y), ("z", "y"),
                  (BATCH_AXIS, BATCH_AXIS), model.mapping),
        GraphSpec("style_encoder", _Call(model.style_encoder), (ref, y),
                  ("x", "y"), (BATCH_AXIS, BATCH_AXIS), model.style_encoder),
    ]


def _cyclegan_specs(model: GANModel) -> list[GraphSpec]:
    cfg = model.config
    x = _picture(2, cfg.channels, 2 ** cfg.n_down)
    return [GraphSpec(name, _Call(getattr(model, name)), (x,), ("x",), (IMAGE_AXES,),
                      getattr(model, name)) for name in ("generator", "generator_ba")]


def _pix2pix_specs(model: GANModel) -> list[GraphSpec]:
    from ..models.zoo.pix2pix import IN_CHANNELS

    gen = model.generator
    x = _picture(2, IN_CHANNELS[model.config.task], model.multiple)
    return [GraphSpec(f"generator.x{s}", _Call(gen, s), (x,), ("x",), (IMAGE_AXES,), gen,
                      {"scale": s}) for s in gen.scales]


def specs_for(model: GANModel) -> list[GraphSpec]:
    """Every graph `model` needs for inference (its `inference_modules`)."""
    if model.family == "noise":
        specs = _noise_specs(model)
    elif model.name == "stargan":
        specs = _stargan_specs(model)
    elif model.name == "cyclegan":
        specs = _cyclegan_specs(model)
    elif model.name == "pix2pix":
        specs = _pix2pix_specs(model)
    else:
        raise ModelError(f"model {model.name!r} has no ONNX export; use --runtime torch",
                         code="runtime_unsupported")
    for spec in specs:
        spec.config = {**model.config.to_dict(), **spec.config}
    return specs
