"""Restoration: POST /api/restore (super-resolution, inpainting, colorization).

The route parses the upload, resolves a warm model through the pipeline cache and calls
polychrome.pipelines.restore.restore -- the same function as `polychrome restore` -- in a
worker thread under the generation timeout. The picture (and mask) go through the one
safe decoder; the result is a PNG at full size carrying its metadata, recorded in the
gallery (unless save=false) with the input pixels kept, so it can be regenerated.
"""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...errors import ImageRejected
from ...sampling import GeneratedImage
from ..deps import ServiceState, get_state
from ..schemas import RestoreIn
from ..style_support import (
    PNG_RESPONSES,
    count_images,
    form_schema,
    keep_pictures,
    kept_picture,
    loaded_model,
    one_file,
    png_response,
    read_request,
)
from .generate import _with_timeout, respond_with_images

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["restoration"])


def _decode(upload: tuple[str, bytes], field: str, *, mask: bool = False) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8 through the one safe decoder; errors name the file.

    A mask's transparent pixels count as black (keep), as the pipeline reads mask files.
    """
    from ...imageio import decode_image

    name, data = upload
    try:
        return decode_image(data, background=(0, 0, 0)) if mask else decode_image(data)
    except ImageRejected as e:
        raise ImageRejected(f"{field} {name!r}: {e}", code=e.code) from None


def keep_restore_inputs(image: GeneratedImage, arr: np.ndarray,
                        holes: np.ndarray | None) -> None:
    """Keep the pixels the model restored (and the mask) by the hashes in the metadata, so
    the gallery can regenerate the result (POST /api/images/{id}/regenerate)."""
    from ...pipelines.restore import grey_u8

    meta = image.metadata
    source = grey_u8(arr) if meta.get("task") == "colorize" else arr
    pics = [types.SimpleNamespace(sha256=meta["input_sha256"], array=source)]
    if holes is not None and meta.get("mask_sha256"):
        white = np.repeat((holes.astype(np.uint8) * 255)[..., None], 3, axis=2)
        pics.append(types.SimpleNamespace(sha256=meta["mask_sha256"], array=white))
    keep_pictures(*pics)


def restore_upload(model: Any, image: tuple[str, bytes], mask: tuple[str, bytes] | None,
                   body: RestoreIn, device: str, *, keep: bool) -> GeneratedImage:
    """One request through the one restoration pipeline (call in a worker thread)."""
    from ...pipelines.restore import check_scale, decode_mask, require_restoration, restore

    # The model's own refusals first (wrong family / task / scale), then the pictures.
    own = require_restoration(model, body.task)
    check_scale(model, body.scale)
    arr = _decode(image, "image")
    given: Any = _decode(mask, "mask", mask=True) if mask is not None else None
    holes = None
    if own == "inpaint" and given is not None:  # (H, W) bool: the pipeline takes it as is
        given = holes = decode_mask(given, arr.shape[0], arr.shape[1])
    out = restore(model, arr, task=body.task, scale=body.scale, mask=given, device=device)
    if keep:
        keep_restore_inputs(out, arr, holes)
    return out


def regenerate_restored(meta: dict[str, str], model: Any, device: str) -> GeneratedImage:
    """A gallery image made by /api/restore, made again from its kept input (and mask)."""
    from ...pipelines.restore import restore

    source = kept_picture(meta.get("input_sha256", ""))
    mask = kept_picture(meta["mask_sha256"]) if meta.get("mask_sha256") else None
    return restore(model, source, task=meta.get("task") or None,
                   scale=meta.get("scale") or None, mask=mask, device=device)


@router.post("/restore", response_class=Response, responses=PNG_RESPONSES,
             openapi_extra=form_schema(RestoreIn, {
                 "image": "the picture to restore",
                 "mask": "inpaint: a picture of the same size, white where to fill in"},
                 json_too=False, required=("image",)))
async def restore_route(request: Request, state: ServiceState = Depends(get_state)) -> Any:
    """Restore an uploaded picture at its own size with a restoration model (pix2pix).

    sr answers the picture `scale` times larger, inpaint fills the white parts of `mask`
    (every other pixel is the input's, byte for byte), colorize gives a grey picture
    colours (its brightness is kept). The answer is image/png with X-Polychrome-Task,
    -Scale, -Width, -Height, -Tiles and, when saved, -Image-Id.
    """
    body, files = await read_request(request, RestoreIn, files=("image", "mask"),
                                     settings=state.settings)
    image = one_file(files, "image", required=True, what="the picture to restore")
    mask = one_file(files, "mask", required=False, what="white where to fill in")

    async def work() -> GeneratedImage:
        loaded = await loaded_model(state, body.model)
        return await asyncio.to_thread(restore_upload, loaded.model, image, mask, body,
                                       state.device, keep=body.save)

    result = await _with_timeout(state.admission.run(work()),
                                 state.settings.generate_timeout_s)
    count_images(state, [result])
    if not body.save:
        return png_response(result.array, result.metadata)
    return await respond_with_images([result], single_png=True)
