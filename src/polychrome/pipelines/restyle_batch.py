"""Many restyles through one Restyler, in batches: a folder as one job.

A restyle of N pictures used to be N batch-of-one forwards, each paying the per-call
overhead of a small network (most of the time for small pictures). Here the images of a
request are grouped by what a batched forward needs to share, and each group runs as
batches through the same calls as `Restyler.run`:

  * pictures of the same working size (and, for CycleGAN-like models, the same direction)
    form a group: a batch is stacked, never resized or padded further, so every picture
    is normalised on its own pixels exactly as when it runs alone;
  * a batch holds at most `batch_size` images and at most the tiling engine's
    `max_pixels` of picture (several small pictures per batch, one big one alone);
  * StarGAN-like models encode each distinct picture of a batch once and decode every
    variation's code against it (as the content cache does for one picture); pictures
    above the tiling budget go through `pipelines/tiling.run_image_model` with the whole
    batch, whose statistics pass records per-picture statistics.

A batched CPU forward does not round exactly like a batch of one (other GEMM / conv
kernels, channels-last): the result equals the one-at-a-time render within float
tolerance (measured on the bundled translators: a few 1e-6 in [-1, 1], so now and then
one uint8 step), not bit for bit. `batch_size=1`, and any image alone in its batch, is
the one-at-a-time path itself, the one `regenerate_style` replays bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import PolychromeError
from ..imageio import from_tensor
from ..sampling import GeneratedImage, style_index, to_rgb
from .recipe import Recipe
from .restyler import Restyler
from .style_codes import Picture, size_multiple
from .tiling import pad_to, padded_size, run_image_model

MAX_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to make: a source picture, its recipe and its index in the request."""

    source: Picture
    recipe: Recipe
    index: int


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or not 1 <= batch_size <= MAX_BATCH:
        raise PolychromeError(f"batch size must be an integer in 1..{MAX_BATCH}, got "
                              f"{batch_size!r}", code="bad_request")
    return batch_size


def render_jobs(r: Restyler, jobs: Sequence[Job], *, batch_size: int,
                progress: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
    """Every job's image, in the order of `jobs`; `progress(done, total)` after each batch."""
    check_batch_size(batch_size)
    total = len(jobs)
    out: list[GeneratedImage | None] = [None] * total
    if batch_size == 1 or r.family not in ("code", "fixed"):
        for k, job in enumerate(jobs):
            r.source = job.source
            out[k] = r.run(job.recipe, index=job.index)
            if progress is not None:
                progress(k + 1, total)
        return out  # type: ignore[return-value]
    done = 0
    for batch in plan_batches(r, jobs, batch_size):
        if len(batch) == 1:  # alone in its batch: the one-at-a-time path, bit for bit
            r.source = jobs[batch[0]].source
            out[batch[0]] = r.run(jobs[batch[0]].recipe, index=jobs[batch[0]].index)
        else:
            for k, image in zip(batch, _run_batch(r, [jobs[k] for k in batch]), strict=True):
                out[k] = image
        done += len(batch)
        if progress is not None:
            progress(done, total)
    return out  # type: ignore[return-value]


def plan_batches(r: Restyler, jobs: Sequence[Job], batch_size: int) -> list[list[int]]:
    """Positions in `jobs`, grouped (same working size; same direction for "fixed" models)
    and cut into batches of at most `batch_size` images and the tiling pixel budget."""
    groups: dict[tuple[int, int, int | None], list[int]] = {}
    for k, job in enumerate(jobs):
        h, w = job.source.array.shape[:2]
        y = style_index(r.model, job.recipe.components[0]["style"]) \
            if r.family == "fixed" else None
        groups.setdefault((h, w, y), []).append(k)
    budget = r.tile_settings().max_pixels
    multiple = size_multiple(r.model)
    batches = []
    for (h, w, _), members in groups.items():
        hp, wp = padded_size(h, w, multiple) if r.native else (h, w)
        per = max(1, min(batch_size, budget // (hp * wp)))
        batches += [members[i:i + per] for i in range(0, len(members), per)]
    return batches


def _rows(value: Any, index: torch.Tensor) -> Any:
    """Rows `index` of every tensor in an encoder's output (a tensor or a (named) tuple)."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index)
    if isinstance(value, tuple):
        items = [_rows(v, index) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value  # None: a field this configuration does not use


def _run_batch(r: Restyler, jobs: list[Job]) -> list[GeneratedImage]:
    """One batch: every job's source has the same working size (and direction)."""
    model, device = r.model, r.device
    slot: dict[str, int] = {}
    pictures: list[Picture] = []
    for job in jobs:
        if job.source.sha256 not in slot:
            slot[job.source.sha256] = len(pictures)
            pictures.append(job.source)
    x = torch.cat([p.tensor(device) for p in pictures])  # (U, 3, H, W) in [-1, 1]
    # channels-last: the CPU convolution kernels run batches faster in it
    x = x.contiguous(memory_format=torch.channels_last)
    index = torch.tensor([slot[j.source.sha256] for j in jobs], device=device)
    same = len(pictures) == len(jobs)
    xb = x if same else x.index_select(0, index)  # (B, 3, H, W): one row per job
    multiple = size_multiple(model)
    r.source = jobs[0].source
    tiles = 1
    with torch.inference_mode():
        if r.family == "fixed":
            y = style_index(model, jobs[0].recipe.components[0]["style"])
            if r.native:
                out, info = run_image_model(lambda t: model.translate(t, y), xb,
                                            multiple=multiple, settings=r.tile_settings())
                tiles = int(info["tiles"])
            else:
                out = model.translate(xb, y)
        else:
            codes = []
            for job in jobs:
                r.source = job.source
                codes.append(r.target_code(job.recipe))
            s = torch.cat(codes)  # (B, style_dim)
            if r.native and not r._fits():  # tiled: G per tile on the whole batch
                out, info = run_image_model(lambda t: model.generator(t, s), xb,
                                            multiple=multiple, settings=r.tile_settings())
                tiles = int(info["tiles"])
            else:
                h, w = x.shape[-2:]
                top = left = 0
                xp = x
                if r.native:  # padded to the stride as run_image_model pads
                    xp, top, left = pad_to(x, *padded_size(h, w, multiple))
                content = model.generator.encode(xp)  # once per distinct picture
                if not same:
                    content = _rows(content, index)
                out = model.generator.decode(content, s)[:, :, top:top + h, left:left + w]
        blends = [j.recipe.pixel_blend for j in jobs]
        if any(b is not None for b in blends):
            out = out.clone()
            for k, b in enumerate(blends):
                if b is not None:  # the same arithmetic as Restyler.run
                    out[k:k + 1] = (1.0 - b) * xb[k:k + 1] + b * out[k:k + 1]
        arrays = from_tensor(to_rgb(out))  # (B, h, w, 3) uint8: what the model drew
    images = []
    for k, job in enumerate(jobs):
        r.source = job.source
        r.last_tiles = tiles
        images.append(r.picture(arrays[k], job.recipe, job.index))
    return images
