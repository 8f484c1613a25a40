"""The cascade over HTTP: `upscale` / `upscaler` on generate, restyle and full renders.

Nothing here upscales a picture: `polychrome.pipelines.restore.upscale` does, the same
function the CLI's --upscale uses. This module only resolves the sr model (named, or the
default `pipelines.restore.default_upscaler` picks) through the pipeline cache, and checks
it before the first model runs, so a wrong upscaler is a 4xx before any work is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import BadRequest
from .style_support import loaded_model


async def upscaler_for(state: Any, upscale: int | None, upscaler: str | None,
                       styles: list[str] | None = None) -> Any:
    """The warm sr model of a request (None without `upscale`), checked for the factor.

    `styles`: the style names of the model whose pictures are enlarged (the default sr
    model is the one trained on most of them)."""
    from ..pipelines.restore import check_upscaler, default_upscaler

    if upscale is None:
        if upscaler is not None:
            raise BadRequest("upscaler names the model for `upscale`: give the factor too "
                             "(upscale=2 or 4)", code="bad_scale")
        return None
    spec = upscaler if upscaler is not None else await asyncio.to_thread(
        default_upscaler, upscale, styles)
    loaded = await loaded_model(state, spec)
    await asyncio.to_thread(check_upscaler, loaded.model, upscale)
    return loaded


def upscale_all(images: list[Any], sr: Any, scale: int | None, device: str) -> list[Any]:
    """Every image through the sr model (call in a worker thread); unchanged without one."""
    from ..pipelines.restore import upscale

    if sr is None:
        return images
    return [upscale(sr.model, im, scale, device) for im in images]
