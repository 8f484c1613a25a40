"""One forward for many requests -- only where it is proven to give the same pixels.

`pipelines.generate` makes image i of a request from seed S+i in a batch of one,
because a CPU forward of B latents need not round like B forwards of one
(different GEMM / conv kernels by batch size). Measured here: DCGAN is batch
invariant at every size tried, StyleGAN and SNGAN are not beyond 2.

So a gathered batch is cut into chunks padded to a power of two ("bucket"),
and the first time a model meets a bucket size, the chunk is computed both
ways and compared bit for bit (and the metadata too) against the pipeline
itself: equal -> that bucket uses the batched forward from then on; different
-> that bucket is served per image forever. Callers always get exactly what
`pipelines.generate` returns.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import torch

from ..errors import PolychromeError
from ..imageio import from_tensor
from ..pipelines.generate import generate
from ..sampling import (
    GeneratedImage,
    check_noise_model,
    generation_metadata,
    generator_kwargs,
    model_identity,
    style_index,
    to_rgb,
)

log = logging.getLogger(__name__)

MAX_BUCKET = 64


@dataclasses.dataclass
class _Item:
    req: int  # which request
    index: int  # position in that request
    seed: int
    style: int | None  # style index, None for an unconditional model


class BatchPlanner:
    """Per-model record of which batch sizes are bit-identical to per-image forwards."""

    def __init__(self) -> None:
        self.exact: dict[int, bool] = {}
        self.lock = threading.Lock()  # one batch at a time per model (the probe writes)


def _bucket(n: int) -> int:
    b = 1
    while b < n:
        b *= 2
    return b


def _meta(model: Any, seed: int, style: int | None, truncation: float,
          index: int) -> dict[str, str]:
    return generation_metadata(model, seed=seed, style=style, truncation=truncation,
                               index=index)


def _forward(model: Any, items: list[_Item], bucket: int, kw: dict[str, Any],
             device: str) -> list:
    """Arrays for `items` from one forward of `bucket` latents (padded by repetition)."""
    padded = items + [items[-1]] * (bucket - len(items))
    z = torch.cat([model.sample_z(1, generator=torch.Generator().manual_seed(it.seed),
                                  device="cpu") for it in padded]).to(device)  # (B, z_dim)
    y = None
    if model.config.num_domains > 1:
        y = torch.tensor([it.style for it in padded], dtype=torch.int64, device=device)
    x = model.generator(z, y, **kw)  # (B, C, R, R) in [-1, 1]
    arrays = from_tensor(to_rgb(x))  # (B, R, R, 3) uint8
    return [arrays[i] for i in range(len(items))]


def _expand(model: Any, reqs: list[Any]) -> tuple[dict[float, list[_Item]], dict[int, Exception]]:
    """Per-image work grouped by truncation (it changes the forward's arguments)."""
    groups: dict[float, list[_Item]] = {}
    errors: dict[int, Exception] = {}
    conditional = model.config.num_domains > 1
    for k, r in enumerate(reqs):
        try:
            check_noise_model(model)
            generator_kwargs(model, r.truncation)  # validates truncation
            idx = style_index(model, r.style) if conditional else None
            if not isinstance(r.seed, int) or r.seed < 0 or not 1 <= r.n <= 10_000:
                raise PolychromeError("bad seed or n", code="bad_request")
        except Exception as e:
            errors[k] = e
            continue
        for i in range(r.n):
            seed = r.seed + i
            style = (seed % model.config.num_domains if idx is None else idx) \
                if conditional else None
            groups.setdefault(float(r.truncation), []).append(_Item(k, i, seed, style))
    return groups, errors


def run_batched(model: Any, planner: BatchPlanner, reqs: list[Any],
                device: str) -> list[Any]:
    """Results per request (a list of GeneratedImage, or the exception it raised)."""
    if sum(r.n for r in reqs) <= 1:
        return [_per_request(model, r, device) for r in reqs]
    with planner.lock, torch.inference_mode():
        groups, errors = _expand(model, reqs)
        out: dict[int, list[GeneratedImage | None]] = {
            k: [None] * r.n for k, r in enumerate(reqs) if k not in errors}
        for truncation, items in groups.items():
            kw = generator_kwargs(model, truncation)
            for start in range(0, len(items), MAX_BUCKET):
                chunk = items[start:start + MAX_BUCKET]
                for it, im in zip(chunk, _chunk(model, planner, chunk, kw, truncation, device),
                                  strict=True):
                    out[it.req][it.index] = im
    return [errors[k] if k in errors else out[k] for k in range(len(reqs))]


def _chunk(model: Any, planner: BatchPlanner, chunk: list[_Item], kw: dict[str, Any],
           truncation: float, device: str) -> list[GeneratedImage]:
    bucket = _bucket(len(chunk))
    known = planner.exact.get(bucket)
    if known is False or len(chunk) == 1:
        return [_single(model, it, truncation, device) for it in chunk]
    arrays = _forward(model, chunk, bucket, kw, device)
    batched = [GeneratedImage(a, _meta(model, it.seed, it.style, truncation, it.index))
               for a, it in zip(arrays, chunk, strict=True)]
    if known:
        return batched
    reference = [_single(model, it, truncation, device) for it in chunk]
    same = all(b.array.tobytes() == r.array.tobytes() and b.metadata == r.metadata
               for b, r in zip(batched, reference, strict=True))
    planner.exact[bucket] = same
    log.info("model %s: batches of %d are %s", model_identity(model)[0], bucket,
             "bit-identical to single forwards: batching them" if same
             else "NOT bit-identical to single forwards: serving them per image")
    return reference


def _single(model: Any, it: _Item, truncation: float, device: str) -> GeneratedImage:
    """The pipeline itself, for one image (index fixed up: it is image `it.index`)."""
    im = generate(model, 1, seed=it.seed, style=it.style, truncation=truncation,
                  device=device)[0]
    im.metadata["index"] = str(it.index)
    return im


def _per_request(model: Any, r: Any, device: str) -> Any:
    try:
        return generate(model, r.n, seed=r.seed, style=r.style, truncation=r.truncation,
                        device=device)
    except Exception as e:
        return e
