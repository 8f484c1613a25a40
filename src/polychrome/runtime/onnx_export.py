"""Export one inference network to ONNX, once per weights, cached and written atomically.

A `GraphSpec` is one graph: a small eval-mode module whose forward takes and returns plain
tensors (the zoo's networks wrapped with their fixed keyword arguments), example inputs,
and which axes stay dynamic (batch always; height and width for fully convolutional image
networks, since pictures are restyled and restored at their own size). The file name
carries a hash of everything the graph depends on (the network's weights and buffers, its
class, the config, the example shapes, the exporter's version), so new weights can never
reuse a stale graph and the same weights never export twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import inspect
import io
import json
import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import PolychromeError
from ..utils.atomic import atomic_path

log = logging.getLogger(__name__)

# Bump when the way graphs are built changes: every cached file is then re-exported.
EXPORT_FORMAT = 1
OPSET = 18
EXTRA_HINT = "pip install 'polychrome[onnx]'"


class RuntimeUnavailable(PolychromeError):
    """The ONNX runtime was asked for but its packages are not installed."""

    code = "runtime_unavailable"
    # Through the API this is the server's configuration (settings `runtime`), not the
    # client's request.
    http_status = 503


class RuntimeUnsupported(PolychromeError):
    """A feature the ONNX graphs cannot reproduce exactly (refused, never approximated)."""

    code = "runtime_unsupported"


def require(module: str) -> ModuleType:
    """Import `module` (onnx, onnxruntime, onnxscript) or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeUnavailable(f"--runtime onnx needs the {module!r} package, which is not "
                                 f"installed: {EXTRA_HINT}") from None


@dataclasses.dataclass
class GraphSpec:
    """One exportable graph. `dynamic[i]` maps input i's axes to names ("batch", ...)."""

    name: str  # e.g. "generator.encode"
    module: nn.Module  # forward(*inputs) -> tensor or tuple of tensors
    inputs: tuple[torch.Tensor, ...]  # example inputs (batch 2: a size-1 axis would be fixed)
    input_names: tuple[str, ...]
    dynamic: tuple[dict[int, str], ...]
    reference: nn.Module  # the network whose weights the graph holds (for the cache key)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


def weights_digest(spec: GraphSpec) -> str:
    """sha256 over what the graph depends on: weights, buffers, class, config, shapes."""
    h = hashlib.sha256()
    head = {"format": EXPORT_FORMAT, "opset": OPSET, "torch": torch.__version__,
            "name": spec.name, "class": type(spec.reference).__qualname__,
            "config": spec.config, "inputs": [[list(t.shape), str(t.dtype)] for t in spec.inputs],
            "dynamic": [{str(k): v for k, v in d.items()} for d in spec.dynamic]}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for key, t in spec.reference.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)  # 1-D: 0-d tensors cannot view()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_graph(spec: GraphSpec, path: Path) -> Path:
    """Export `spec` to `path` (atomic: a reader sees the old file, the new one or none)."""
    require("onnxscript")  # the torch.export-based exporter builds its graphs with it
    module = spec.module.eval()
    # AUTO: torch.export finds how the axes relate (a skip map is twice the bottleneck);
    # the names only document them and go into the cache key.
    shapes = _by_parameter(module, [{axis: torch.export.Dim.AUTO for axis in d}
                                    for d in spec.dynamic])
    # The exporter prints its progress on stdout, which `--json` keeps for the answer.
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, spec.inputs, input_names=list(spec.input_names),
                                    dynamic_shapes=shapes, dynamo=True, opset_version=OPSET,
                                    verbose=False, report=False)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    log.info("exported %s to %s", spec.name, path.name)
    return path


def _by_parameter(module: nn.Module, shapes: list[dict]) -> dict[str, Any]:
    """Per-input axes as torch.export wants them: by forward's parameter names, the inputs
    that fill a `*rest` parameter as one tuple."""
    out: dict[str, Any] = {}
    i = 0
    for name, p in inspect.signature(module.forward).parameters.items():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = tuple(shapes[i:])
            i = len(shapes)
        elif i < len(shapes):
            out[name] = shapes[i]
            i += 1
    return out


def cache_root() -> Path:
    """Exported graphs live in this machine's cache (bundled models may be read-only)."""
    from ..settings import get_settings

    return get_settings().cache / "onnx"


def cached_graph(spec: GraphSpec, prefix: str, cache_dir: Path | None = None) -> Path:
    """The exported file for `spec`, exporting it first when this weights hash is new."""
    root = cache_dir if cache_dir is not None else cache_root()
    path = root / f"{prefix}-{spec.name}-{weights_digest(spec)[:20]}.onnx"
    if not path.is_file():
        export_graph(spec, path)
    return path
