"""Inference runtimes: the same networks run by PyTorch (default) or by ONNX Runtime.

The pipelines call a model's networks (`model.generator(z, y)`, `G.encode` / `G.decode`,
`model.mapping(z, y)`, ...) and never ask how they run. `use_runtime(model, "onnx")`
swaps each inference network for an object with the same call signature that runs an
exported ONNX graph instead (`onnx_modules.py`); the graphs are exported once per weights
and cached (`onnx_export.py`). int8 quantisation and structured pruning, the compressed
variants measured by `benchmarks/compression.py`, live in `quantize.py` and `prune.py`.

onnxruntime is an optional extra (`pip install 'polychrome[onnx]'`): nothing here imports
it until the ONNX path is asked for.
"""

from __future__ import annotations

from .select import RUNTIMES, VARIANTS, check_runtime, use_runtime

__all__ = ["RUNTIMES", "VARIANTS", "check_runtime", "use_runtime"]
