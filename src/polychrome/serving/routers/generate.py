"""Generation: POST /api/generate. Every result goes into the gallery.

Later style routes (restyle / mix / interpolate) follow the same shape: resolve
a warm model through the cache, run the pipeline function under the timeout
(`_with_timeout`), and answer with `respond_with_images`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from ...errors import PolychromeError
from ...persistence import gallery
from ...sampling import GeneratedImage
from ..deps import ServiceState, get_state
from ..errors import GenerateTimeout
from ..inference import GenRequest, run_generate
from ..openapi import INFERENCE
from ..schemas import GenerateIn, GenerateOut

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["generation"])
T = TypeVar("T")


async def _with_timeout(aw: Awaitable[T], seconds: float) -> T:
    try:
        return await asyncio.wait_for(aw, timeout=seconds)
    except TimeoutError:
        raise GenerateTimeout(f"generation took longer than {seconds:g} s "
                              "(generate_timeout_s); ask for fewer images") from None


def _headers(meta: dict[str, str], image_id: int) -> dict[str, str]:
    h = {f"X-Polychrome-{k.replace('_', '-').title()}": str(v) for k, v in meta.items()
         if str(v).isascii()}
    h["X-Polychrome-Image-Id"] = str(image_id)
    h["Location"] = f"/api/images/{image_id}.png"
    return h


def _respond(stored: list[tuple[dict[str, Any], bytes]], *, single_png: bool) -> Response:
    """One image -> image/png (metadata in text chunks and headers); several -> JSON URLs."""
    if single_png and len(stored) == 1:
        info, png = stored[0]
        return Response(png, media_type="image/png", headers=_headers(info["metadata"],
                                                                      info["id"]))
    return JSONResponse({"images": [info for info, _ in stored]})


async def respond_with_images(images: list[GeneratedImage], *, single_png: bool) -> Response:
    """Record pipeline output in the gallery and answer (for routes without batching)."""
    stored = (await asyncio.to_thread(gallery.store_generated, [images]))[0]
    return _respond(stored, single_png=single_png)


def _generate_and_store(loaded: Any, req: GenRequest, device: str) -> Any:
    return gallery.store_generated([run_generate(loaded, req, device)])[0]


@router.post("/generate", response_model=GenerateOut,
             responses={200: {"content": {"image/png": {}},
                              "description": "image/png for n == 1, JSON for n > 1"},
                        **INFERENCE})
async def generate_images(body: GenerateIn, state: ServiceState = Depends(get_state)) -> Any:
    """Generate n images from a noise model: image i uses seed+i (bit-reproducible).

    `upscale` (2 or 4) hands each image to a super-resolution model (`upscaler`, default
    the first registered one trained for that factor) before it is answered and stored.
    """
    s = state.settings
    if body.n > s.generate_max_n:
        raise PolychromeError(f"n must be at most {s.generate_max_n} per request "
                              "(generate_max_n)", code="bad_request")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    req = GenRequest(n=body.n, seed=seed, style=body.style, truncation=body.truncation)

    async def work() -> list[tuple[dict[str, Any], bytes]]:
        from ..cascade import upscale_all, upscaler_for

        loaded = state.cache.warm(body.model) or \
            await asyncio.to_thread(state.cache.get, body.model)
        sr = await upscaler_for(state, body.upscale, body.upscaler, loaded.model.style_names)
        if sr is not None:  # the cascade: generate, upscale, then store (no micro-batching)
            def run() -> list[tuple[dict[str, Any], bytes]]:
                images = upscale_all(run_generate(loaded, req, state.device), sr,
                                     body.upscale, state.device)
                return gallery.store_generated([images])[0]

            return await asyncio.to_thread(run)
        if s.batching:
            return await state.batcher.submit(loaded, req)
        return await asyncio.to_thread(_generate_and_store, loaded, req, state.device)

    stored = await _with_timeout(state.admission.run(work()), s.generate_timeout_s)
    state.metrics.images.labels(stored[0][0]["model"]).inc(len(stored))
    return _respond(stored, single_png=body.n == 1)
