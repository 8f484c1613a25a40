"""Models: list, show (versions, styles, family, card), a sample grid per style."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ...utils.atomic import atomic_write_bytes
from ..deps import ServiceState, checked_ref, get_state
from ..schemas import ref_path

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/models", tags=["models"])
ModelName = ref_path("model")

GRID_PAD = 2  # white pixels between tiles


@router.get("")
def list_models() -> dict[str, Any]:
    """Every registered model (latest version). Restoration models also give `task` (sr |
    inpaint | colorize) and `scales` (the sr factors; [1] otherwise); others: null, []."""
    from ...persistence.models import list_models_registered, restoration_models

    items = list_models_registered()
    restoration = {m["name"]: m for m in restoration_models()} \
        if any(m["family"] == "restoration" for m in items) else {}
    for m in items:
        r = restoration.get(m["name"])
        m["task"] = r["task"] if r else None
        m["scales"] = r["scales"] if r else []
    return {"items": items}


@router.get("/{name}")
def show_model(name: str = ModelName) -> dict[str, Any]:
    """`name` or `name:version`: versions, styles, family, metrics and the model card."""
    from ...persistence.models import show_model as _show

    info = _show(checked_ref(name, "model name"))
    info.pop("path", None)  # server paths are not the client's business
    for v in info.get("versions", []):
        v.pop("path", None)
    return info


def _grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of (R, R, 3) uint8 tiles -> one (H, W, 3) uint8 image on white."""
    r = rows[0][0].shape[0]
    cols = max(len(row) for row in rows)
    h = len(rows) * r + (len(rows) + 1) * GRID_PAD
    w = cols * r + (cols + 1) * GRID_PAD
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = GRID_PAD + i * (r + GRID_PAD), GRID_PAD + j * (r + GRID_PAD)
            out[y:y + r, x:x + r] = tile
    return out


def render_samples(state: ServiceState, name: str, cols: int) -> bytes:
    """A row per style, columns seeds 0..cols-1: deterministic, so cached on disk."""
    from ...errors import NotFound
    from ...imageio import encode_png
    from ...pipelines.generate import generate

    loaded = state.cache.get(checked_ref(name, "model name"))
    ref = loaded.ref
    cache_dir = state.settings.cache / "model-samples"
    key = f"{ref.name or 'path'}-{ref.version or 0}-{cols}.png"
    path = cache_dir / key
    if ref.name is not None and path.is_file():
        return path.read_bytes()
    if loaded.model.family != "noise":  # this resource exists for noise models only
        raise NotFound(f"model {ref.spec!r} has no sample grid: it is a "
                       f"{loaded.model.family!r} model (grids are drawn from noise)",
                       code="wrong_family")
    styles = loaded.model.style_names if loaded.model.config.num_domains > 1 else [None]
    rows = []
    for style in styles:
        images = generate(loaded.model, cols, seed=0, style=style, device=state.device)
        rows.append([im.array for im in images])
    png = encode_png(_grid(rows), {"model": ref.spec, "styles": ",".join(
        s for s in styles if s is not None), "seeds": f"0..{cols - 1}"})
    if ref.name is not None:
        atomic_write_bytes(path, png)
    return png


@router.get("/{name}/samples.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def model_samples(name: str = ModelName, cols: int = Query(8, ge=1, le=16),
                        state: ServiceState = Depends(get_state)) -> Response:
    """A grid: a row per style, generated deterministically (seeds 0..cols-1) and cached."""
    png = await asyncio.to_thread(render_samples, state, name, cols)
    return Response(png, media_type="image/png")
