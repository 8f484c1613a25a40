"""`use_runtime(model, runtime)`: the one switch between PyTorch and ONNX Runtime.

The pipelines stay one code path: this swaps a loaded model's inference networks for
stand-ins with the same call signatures (`onnx_modules.py`), nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import PolychromeError
from ..models.base import GANModel
from ..settings import RUNTIMES
from .onnx_export import RuntimeUnsupported, cached_graph, require
from .onnx_modules import (
    OnnxGraph,
    OnnxImageNetwork,
    OnnxLabelled,
    OnnxNoiseGenerator,
    OnnxRestorationGenerator,
    OnnxStarGenerator,
    OnnxStyleGenerator,
    OnnxStyleMapping,
    OnnxStyleSynthesis,
    has_instance_norm,
)
from .specs import specs_for

log = logging.getLogger(__name__)

# fp32: the exported graphs as they are; int8-dynamic / int8-static: see quantize.py.
VARIANTS = ("fp32", "int8-dynamic", "int8-static")


def check_runtime(name: str) -> str:
    """A runtime name from a flag, a setting or a request, checked."""
    value = str(name).strip().lower()
    if value not in RUNTIMES:
        raise PolychromeError(f"unknown runtime {name!r}; valid runtimes: {', '.join(RUNTIMES)}",
                              code="bad_runtime")
    return value


def _device(model: GANModel) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _graph_path(spec, prefix: str, variant: str, cache_dir: Path | None,
                calibration: dict[str, list] | None) -> Path:
    path = cached_graph(spec, prefix, cache_dir)
    if variant == "fp32":
        return path
    from .quantize import quantized_path

    return quantized_path(path, variant, (calibration or {}).get(spec.name))


def onnx_graphs(model: GANModel, *, variant: str = "fp32", cache_dir: Path | None = None,
                threads: int | None = None, calibration: dict[str, list] | None = None
                ) -> dict[str, OnnxGraph]:
    """Every inference graph of `model` as an ONNX Runtime session (exported when new)."""
    require("onnxruntime")
    if variant not in VARIANTS:
        raise PolychromeError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}",
                              code="bad_runtime")
    prefix = model.name
    graphs = {}
    for spec in specs_for(model):
        path = _graph_path(spec, prefix, variant, cache_dir, calibration)
        graphs[spec.name] = OnnxGraph(path, instance_norm=has_instance_norm(spec.reference),
                                      threads=threads)
    return graphs


def use_runtime(model: GANModel, runtime: str = "torch", *, variant: str = "fp32",
                cache_dir: Path | None = None, threads: int | None = None,
                calibration: dict[str, list] | None = None) -> GANModel:
    """`model` with its inference networks run by `runtime` (in place; returned for chaining).

    "torch" leaves the model as it is. "onnx" exports each inference network once per
    weights (cached under the machine's cache dir), then puts ONNX Runtime stand-ins where
    the networks were. ONNX Runtime runs here on the CPU only. `variant` int8-static needs
    `calibration` (quantize.calibration_feeds, made from the torch model beforehand).
    """
    runtime = check_runtime(runtime)
    if runtime == "torch" or getattr(model, "runtime", "torch") == "onnx":
        return model
    if _device(model).type != "cpu":
        raise RuntimeUnsupported("--runtime onnx runs on the CPU; use --device cpu or the "
                                 "PyTorch runtime on an accelerator")
    model.eval()
    graphs = onnx_graphs(model, variant=variant, cache_dir=cache_dir, threads=threads,
                         calibration=calibration)
    cfg = model.config
    if model.family == "noise" and model.name == "stylegan":
        gen = model.generator
        model.generator = OnnxStyleGenerator(OnnxStyleMapping(graphs, gen.mapping),
                                             OnnxStyleSynthesis(graphs, cfg))
    elif model.family == "noise":
        model.generator = OnnxNoiseGenerator(graphs, cfg)
    elif model.name == "stargan":
        model.generator = OnnxStarGenerator(graphs, model.generator)
        model.mapping = OnnxLabelled(graphs, "mapping", "z", cfg.num_domains)
        model.style_encoder = OnnxLabelled(graphs, "style_encoder", "x", cfg.num_domains)
    elif model.name == "cyclegan":
        model.generator = OnnxImageNetwork(graphs, "generator")
        model.generator_ba = OnnxImageNetwork(graphs, "generator_ba")
    else:  # pix2pix (specs_for refused every other model)
        model.generator = OnnxRestorationGenerator(graphs, model.generator)
    model.runtime = "onnx"
    model.runtime_variant = variant
    return model
