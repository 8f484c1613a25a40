"""ONNX-backed stand-ins for the zoo's inference networks, with the same call signatures.

`use_runtime(model, "onnx")` puts these where the torch networks were (`model.generator`,
`model.mapping`, ...), so every pipeline runs unchanged: the choice of runtime sits behind
the network call. Each stand-in checks its arguments like the torch network does, runs the
exported graph(s) with ONNX Runtime on the CPU, and gives back torch tensors on the input's
device. What a graph cannot do the same way is refused with a RuntimeUnsupported error:
soft (blended) style labels, random per-layer noise, training-mode updates, and injected
whole-picture instance-norm statistics (the tiling engine's very large pictures).

Graph specs (`specs_for`) say what is exported per model:
  noise models   "generator": G(z[, y]) with truncation 1 (z-space truncation is z * psi,
                 applied here before the graph, exactly like `prepare_latent`)
  stylegan       "generator.mapping": (z[, y]) -> w, "generator.synthesis": ws -> image
                 (w-space truncation toward the style's mean w is applied here, in torch)
  stargan        "generator.encode": x -> (features, *skips), "generator.decode":
                 (features, *skips[, source], s) -> image, "mapping": (z, y) -> s,
                 "style_encoder": (x, y) -> s
  cyclegan       "generator", "generator_ba": x -> image
  pix2pix        "generator.x<s>": x -> image, one graph per trained scale
Image -> image graphs keep batch, height and width dynamic; the others only the batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import layers
from ..models.zoo.common import check_labels, check_latent, check_noise_mode, prepare_latent
from ..models.zoo.stargan import Content
from ..models.zoo.stylegan import MappingNetwork
from .onnx_export import RuntimeUnsupported, require

_TILED = ("this picture is larger than tile_max_pixels, so it runs in tiles normalised with "
          "whole-picture instance-norm statistics, which the ONNX graphs cannot take in; "
          "use --runtime torch for it (or raise tile_max_pixels)")


def has_instance_norm(net: nn.Module) -> bool:
    return any(isinstance(m, layers.InstanceNorm2d) for m in net.modules())


class OnnxGraph:
    """One ONNX Runtime session: tensors in, tensors out (float32 on the input's device)."""

    def __init__(self, path: Path, *, instance_norm: bool, threads: int | None = None):
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        # The same intra-op threads as torch, so a comparison measures the runtime alone.
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.instance_norm = instance_norm

    def __call__(self, named: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if self.instance_norm and layers._NORM_PROVIDER.get() is not None:
            raise RuntimeUnsupported(_TILED)
        device = next(iter(named.values())).device
        feed = {}
        for name in self.input_names:  # the exporter drops inputs a graph never reads
            t = named[name].detach().to("cpu")
            t = t.float() if t.is_floating_point() else t.long()
            feed[name] = t.contiguous().numpy()
        return [torch.from_numpy(o).to(device) for o in self.session.run(None, feed)]


class OnnxModule(nn.Module):
    """Base of the stand-ins: no parameters, graphs by name, inference only."""

    runtime = "onnx"

    def __init__(self, graphs: dict[str, OnnxGraph]):
        super().__init__()
        self.graphs = graphs

    def train(self, mode: bool = True) -> OnnxModule:
        if mode:
            raise RuntimeUnsupported("ONNX networks are for inference only; train with "
                                     "the PyTorch runtime")
        return super().train(False)


def _hard_labels(y: Any, num_domains: int, batch: int, device: torch.device
                 ) -> torch.Tensor | None:
    y = check_labels(y, num_domains, batch, device, soft=True)
    if y is not None and y.is_floating_point():
        raise RuntimeUnsupported("blended (soft) style labels run through PyTorch only: "
                                 "use --runtime torch")
    return y


# -- noise generators ---------------------------------------------------------------------
class OnnxNoiseGenerator(OnnxModule):
    """G(z, y) of mlp-gan, dcgan, cgan, wgan-gp and sngan."""

    def __init__(self, graphs: dict[str, OnnxGraph], cfg: Any):
        super().__init__(graphs)
        self.cfg = cfg

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, **_: object) -> torch.Tensor:
        # z (B, z_dim), y (B,) int64 or None -> (B, C, R, R) in [-1, 1]
        z = prepare_latent(z, self.cfg.z_dim, truncation)
        labels = _hard_labels(y, self.cfg.num_domains, z.shape[0], z.device)
        named = {"z": z} if labels is None else {"z": z, "y": labels}
        return self.graphs["generator"](named)[0]


class OnnxStyleMapping(OnnxModule):
    """StyleGAN's mapping z (+ label) -> w; truncation toward w_avg[y] runs in torch."""

    truncate = MappingNetwork.truncate  # reads self.w_avg only

    def __init__(self, graphs: dict[str, OnnxGraph], mapping: MappingNetwork):
        super().__init__(graphs)
        self.cfg = mapping.cfg
        self.register_buffer("w_avg", mapping.w_avg.detach().clone())

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, update_w_avg: bool | None = None) -> torch.Tensor:
        # z (B, z_dim), y (B,) int64 or None -> w (B, w_dim)
        if update_w_avg:
            raise RuntimeUnsupported("w_avg is updated in training, with the PyTorch runtime")
        check_latent(z, self.cfg.z_dim)
        labels = _hard_labels(y, self.cfg.num_domains, z.shape[0], z.device)
        named = {"z": z} if labels is None else {"z": z, "y": labels}
        w = self.graphs["generator.mapping"](named)[0]
        return w if truncation == 1.0 else self.truncate(w, labels, truncation)


class OnnxStyleSynthesis(OnnxModule):
    """StyleGAN's synthesis ws (B, num_ws, w_dim) -> image, with the constant noise."""

    def __init__(self, graphs: dict[str, OnnxGraph], cfg: Any):
        super().__init__(graphs)
        self.cfg = cfg
        self.num_ws = cfg.num_ws

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        check_noise_mode(noise_mode)
        if noise_mode != "const":
            raise RuntimeUnsupported(f"noise_mode {noise_mode!r} runs through PyTorch only; "
                                     "the ONNX graph holds the constant noise")
        if ws.dim() == 2:  # one w for every layer
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        if ws.dim() != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.cfg.w_dim):
            from ..errors import ModelError

            raise ModelError(f"ws must have shape (B, {self.num_ws}, {self.cfg.w_dim}), "
                             f"got {tuple(ws.shape)}", code="bad_latent")
        return self.graphs["generator.synthesis"]({"ws": ws})[0]


class OnnxStyleGenerator(OnnxModule):
    """StyleGAN's G(z, y) = synthesis(mapping(z, y) on every layer)."""

    def __init__(self, mapping: OnnxStyleMapping, synthesis: OnnxStyleSynthesis):
        super().__init__({**mapping.graphs, **synthesis.graphs})
        self.mapping = mapping
        self.synthesis = synthesis
        self.cfg = synthesis.cfg
        self.num_ws = synthesis.num_ws

    def truncate(self, w: torch.Tensor, y: torch.Tensor | int | None, psi: float
                 ) -> torch.Tensor:
        y = check_labels(y, self.cfg.num_domains, w.shape[0], w.device, soft=True)
        return self.mapping.truncate(w, y, psi)

    def forward(self, z: torch.Tensor, y: torch.Tensor | int | None = None, *,
                truncation: float = 1.0, noise_mode: str = "random",
                mixing_prob: float = 0.0) -> torch.Tensor:
        check_noise_mode(noise_mode)
        w = self.mapping(z, y, truncation=truncation)  # (B, w_dim)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1), noise_mode=noise_mode)


# -- image -> image -----------------------------------------------------------------------
class OnnxStarGenerator(OnnxModule):
    """StarGAN v2's G: encode(x) -> Content, decode(content, s), G(x, s)."""

    def __init__(self, graphs: dict[str, OnnxGraph], generator: nn.Module):
        super().__init__(graphs)
        for name in ("content_channels", "content_size", "skip_levels", "rgb_skip"):
            setattr(self, name, getattr(generator, name))

    def encode(self, x: torch.Tensor) -> Content:
        # (B, C, H, W) -> Content: features (B, Cc, H / 2**n, W / 2**n), skips, source
        out = self.graphs["generator.encode"]({"x": x})
        return Content(out[0], tuple(out[1:]), x if self.rgb_skip else None)

    def decode(self, content: Content, s: torch.Tensor) -> torch.Tensor:
        # content (B or 1 rows), s (B, style_dim) -> (B, C, H, W) in [-1, 1]
        b = max(content.features.shape[0], s.shape[0])  # torch broadcasts one row; so do we

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.expand(b, *t.shape[1:]) if t.shape[0] == 1 else t

        named = {"features": rows(content.features), "s": rows(s)}
        for i, skip in enumerate(content.skips):
            named[f"skip{i}"] = rows(skip)
        if self.rgb_skip:
            named["source"] = rows(content.source)
        return self.graphs["generator.decode"](named)[0]

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), s)


class OnnxLabelled(OnnxModule):
    """StarGAN's mapping F(z, y) and style encoder E(x, y): (input, label) -> s."""

    def __init__(self, graphs: dict[str, OnnxGraph], name: str, input_name: str,
                 num_domains: int):
        super().__init__(graphs)
        self.graph_name, self.input_name, self.num_domains = name, input_name, num_domains

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (B, ...), y (B,) int64 -> (B, style_dim)
        y = torch.as_tensor(y, device=x.device).long().reshape(-1).expand(x.shape[0])
        return self.graphs[self.graph_name]({self.input_name: x, "y": y})[0]


class OnnxImageNetwork(OnnxModule):
    """An x -> image network (CycleGAN's generators)."""

    def __init__(self, graphs: dict[str, OnnxGraph], name: str):
        super().__init__(graphs)
        self.graph_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graphs[self.graph_name]({"x": x})[0]


class OnnxRestorationGenerator(OnnxModule):
    """pix2pix's G(x, scale): one graph per trained scale."""

    def __init__(self, graphs: dict[str, OnnxGraph], generator: nn.Module):
        super().__init__(graphs)
        self.task, self.scales = generator.task, list(generator.scales)
        self._torch_scale = generator._scale  # the same scale check and default as torch

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        s = self._torch_scale(scale)
        return self.graphs[f"generator.x{s}"]({"x": x})[0]
