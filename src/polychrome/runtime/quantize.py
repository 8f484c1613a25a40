"""int8 variants of an exported graph (onnxruntime.quantization), cached beside it.

int8-dynamic: weights stored as int8 (per channel), activations quantised on the fly
  per call (`quantize_dynamic`); no calibration data.
int8-static: weights and activations int8 with activation ranges fixed beforehand from
  calibration inputs (`quantize_static`, QDQ format, per-channel weights, min-max ranges).
  The calibration inputs are what the pipelines feed each graph, drawn the way they draw
  them (`calibration_feeds`): latents from seeded `sample_z` and every style label for noise
  models and StarGAN's mapping; for image networks the caller's pictures (the benchmark
  uses the bundled example pictures, which are not the models' training sets), prepared
  as the pipeline prepares them (sr: the picture itself; inpaint: pyramid-filled with a
  hole mask; colorize: its luma), with StarGAN's decoder fed their content and codes.

Neither variant is a default anywhere: `benchmarks/compression.py` measures what they
cost in quality (docs/quality/compression.json).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import PolychromeError
from ..models.base import GANModel
from ..utils.atomic import atomic_path
from .onnx_export import require

Feed = dict[str, np.ndarray]


# The weighted ops; everything else (norms, activations, resizes) stays float.
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


def weighted_nodes(path: Path) -> list[str]:
    """QUANTIZED_OPS nodes whose weight is stored in the graph. StyleGAN's modulated convs
    compute their weight per call from the style; those stay float."""
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    stored = {t.name for t in graph.initializer}
    return [n.name for n in graph.node
            if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in stored]


def quantized_path(fp32: Path, variant: str, feeds: list[Feed] | None = None) -> Path:
    """The `variant` of the graph at `fp32`, made once (atomically) and cached beside it."""
    q = require("onnxruntime.quantization")
    if variant == "int8-dynamic":
        out = fp32.with_name(f"{fp32.stem}.int8-dynamic.onnx")
        if not out.is_file():
            with atomic_path(out) as tmp:
                q.quantize_dynamic(str(fp32), str(tmp), weight_type=q.QuantType.QInt8,
                                   per_channel=True, op_types_to_quantize=QUANTIZED_OPS,
                                   nodes_to_quantize=weighted_nodes(fp32))
        return out
    if variant == "int8-static":
        if not feeds:
            raise PolychromeError("int8-static needs calibration inputs", code="bad_runtime")
        out = fp32.with_name(f"{fp32.stem}.int8-static-{_feeds_digest(feeds)}.onnx")
        if not out.is_file():
            with atomic_path(out) as tmp:
                q.quantize_static(str(fp32), str(tmp), _Reader(q, feeds),
                                  quant_format=q.QuantFormat.QDQ, per_channel=True,
                                  activation_type=q.QuantType.QInt8,
                                  weight_type=q.QuantType.QInt8,
                                  op_types_to_quantize=QUANTIZED_OPS,
                                  nodes_to_quantize=weighted_nodes(fp32))
        return out
    raise PolychromeError(f"unknown variant {variant!r}", code="bad_runtime")


def _feeds_digest(feeds: list[Feed]) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for k in sorted(feed):
            h.update(k.encode())
            h.update(np.ascontiguousarray(feed[k]).tobytes())
    return h.hexdigest()[:12]


def _Reader(q, feeds: list[Feed]):  # noqa: N802 - builds a subclass of ORT's reader class
    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[Feed] = iter(feeds)

        def get_next(self) -> Feed | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return Reader()


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t.long()).contiguous().numpy()


def calibration_feeds(model: GANModel, pictures: Iterable[torch.Tensor] = (), *,
                      n_latents: int = 16, seed: int = 0) -> dict[str, list[Feed]]:
    """Per graph name, inputs drawn as the pipelines draw them (see the module docstring).

    `pictures`: (1, 3, H, W) in [-1, 1] with sides a multiple of the model's stride
    (image networks only). Runs the torch model (call before `use_runtime`).
    """
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    labels = [i % cfg.num_domains for i in range(n_latents)]
    out: dict[str, list[Feed]] = {}
    with torch.no_grad():
        if model.family == "noise":
            zs = [model.sample_z(1, generator=g, device="cpu") for _ in labels]

            def zy(z: torch.Tensor, y: int) -> Feed:
                feed = {"z": _np(z)}
                if cfg.num_domains > 1:
                    feed["y"] = np.array([y], dtype=np.int64)
                return feed

            if model.name == "stylegan":
                out["generator.mapping"] = [zy(z, y) for z, y in zip(zs, labels, strict=True)]
                gen = model.generator
                out["generator.synthesis"] = [
                    {"ws": _np(gen.mapping(z, torch.tensor([y]) if cfg.num_domains > 1 else None)
                               .unsqueeze(1).expand(-1, gen.num_ws, -1))}
                    for z, y in zip(zs, labels, strict=True)]
            else:
                out["generator"] = [zy(z, y) for z, y in zip(zs, labels, strict=True)]
            return out
        pics = list(pictures)
        if not pics:
            raise PolychromeError("int8-static for an image model needs calibration pictures",
                                  code="bad_runtime")
        if model.name == "stargan":
            zs = [model.sample_z(1, generator=g, device="cpu") for _ in labels]
            out["mapping"] = [{"z": _np(z), "y": np.array([y], dtype=np.int64)}
                              for z, y in zip(zs, labels, strict=True)]
            codes = [model.style_from_latent(z, y) for z, y in zip(zs, labels, strict=True)]
            refs = [torch.nn.functional.interpolate(p, size=(cfg.resolution, cfg.resolution),
                                                    mode="bilinear", antialias=True,
                                                    align_corners=False) for p in pics]
            out["style_encoder"] = [{"x": _np(r), "y": np.array([y], dtype=np.int64)}
                                    for r, y in zip(refs * n_latents, labels, strict=False)]
            out["generator.encode"] = [{"x": _np(p)} for p in pics]
            dec = []
            for i, p in enumerate(pics):
                c = model.generator.encode(p)
                feed = {"features": _np(c.features), "s": _np(codes[i % len(codes)])}
                feed.update({f"skip{k}": _np(t) for k, t in enumerate(c.skips)})
                if model.generator.rgb_skip:
                    feed["source"] = _np(p)
                dec.append(feed)
            out["generator.decode"] = dec
        elif model.name == "cyclegan":
            out["generator"] = out["generator_ba"] = [{"x": _np(p)} for p in pics]
        elif model.name == "pix2pix":
            feeds = [{"x": _np(_restoration_input(model, p, i))} for i, p in enumerate(pics)]
            for s in model.generator.scales:
                out[f"generator.x{s}"] = feeds
        return out


def _restoration_input(model: GANModel, picture: torch.Tensor, i: int) -> torch.Tensor:
    """The pipeline's generator input for a clean picture (a hole mask for inpainting)."""
    if model.config.task != "inpaint":
        return model.prepare(picture)
    from ..data.degrade import random_masks

    h, w = picture.shape[-2:]
    mask = random_masks(1, h, w, torch.Generator().manual_seed(i))  # (1, 1, H, W)
    return model.prepare(picture, mask.to(picture.dtype))
