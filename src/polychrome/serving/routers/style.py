"""Style routes: restyle, mix, interpolate, regenerate from the gallery (sessions: sessions.py).

Every route parses its inputs, resolves a warm model through the pipeline cache and
calls polychrome.pipelines.style / animate -- the same functions as the CLI -- under
the generation timeout. Every uploaded picture goes through the one safe decoder
(via `load_picture`); every PNG carries its metadata and, unless a live preview asks
otherwise, is recorded in the gallery.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from ...errors import PolychromeError
from ...persistence import gallery
from ..cascade import upscale_all, upscaler_for
from ..deps import ServiceState, get_state
from ..errors import BadRequest
from ..openapi import INFERENCE
from ..schemas import GenerateOut, InterpolateIn, MixIn, RestyleIn
from ..style_support import (
    PNG_RESPONSES,
    checked_size,
    count_images,
    form_schema,
    keep_pictures,
    kept_picture,
    loaded_model,
    new_seed,
    one_file,
    own_pixels_cap,
    picture,
    png_response,
    read_request,
    style_text,
)
from .generate import _with_timeout, respond_with_images

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["style"])


# -- restyle -----------------------------------------------------------------------------------
@router.post("/restyle", response_model=GenerateOut, responses=PNG_RESPONSES,
             openapi_extra=form_schema(RestyleIn, {
                 "image": "the picture to restyle", "reference": "a reference picture whose "
                 "style to take (instead of `style`)"}, json_too=False,
                 required=("image",)))
async def restyle_route(request: Request, state: ServiceState = Depends(get_state)) -> Any:
    """Restyle an uploaded picture into a style or a reference picture's style.

    One result answers image/png; `variations` > 1 answers JSON with gallery URLs. A model
    trained on crops gives the picture back at its own size (or the longer side `size`);
    a whole-picture model draws at its resolution and gives that back at the picture's
    aspect (X-Polychrome-Drawn-At says which). `upscale` (2 or 4) hands the result to a
    super-resolution model (`upscaler`, default: the first registered one for the factor).
    """
    from ...pipelines.restyle_batch import MAX_BATCH
    from ...pipelines.style import Restyler, require_translation, restyle

    body, files = await read_request(request, RestyleIn, files=("image", "reference"),
                                     settings=state.settings)
    image = one_file(files, "image", required=True, what="the picture to restyle")
    ref = one_file(files, "reference", required=False, what="a reference picture")
    if body.style is None and ref is None:
        raise BadRequest("give a target `style` or upload a `reference` picture",
                         code="missing_style")
    if body.variations > state.settings.generate_max_n:
        raise BadRequest(f"variations must be at most {state.settings.generate_max_n} "
                         "(generate_max_n)")
    seed = new_seed(body.seed)
    size = checked_size(body.size)

    async def work() -> list[Any]:
        loaded = await loaded_model(state, body.model)
        sr = await upscaler_for(state, body.upscale, body.upscaler, loaded.model.style_names)

        def run() -> list[Any]:
            return upscale_all(restyled(), sr, body.upscale, state.device)

        def restyled() -> list[Any]:
            model = loaded.model
            require_translation(model, "restyle")
            target = style_text(model, body.style) if body.style else None
            ref_style = style_text(model, body.reference_style) if body.reference_style \
                else None
            src = picture(model, image, "image", size=size)
            ref_pic = picture(model, ref, "reference", reference=True) if ref is not None \
                else None
            keep_pictures(src, ref_pic)
            if ref_pic is not None:  # with a reference, `style` names the reference's style
                target = ref_style or target
            # variations of one picture: one batched forward (pipelines/restyle_batch.py),
            # as the CLI restyles a folder, when the server batches at all
            batch = min(state.settings.batch_max, MAX_BATCH) if state.settings.batching else 1
            return restyle(model, [src], style=target, reference=ref_pic,
                           strength=body.strength, seed=seed, variations=body.variations,
                           pixel_blend=body.pixel_blend, device=state.device,
                           restyler=Restyler(model, device=state.device, size=size),
                           batch_size=max(1, batch))

        return await asyncio.to_thread(run)

    images = await _with_timeout(state.admission.run(work()),
                                 state.settings.generate_timeout_s)
    count_images(state, images)
    return await respond_with_images(images, single_png=True)


# -- mix ---------------------------------------------------------------------------------------
@router.post("/mix", response_class=Response, responses=PNG_RESPONSES,
             openapi_extra=form_schema(MixIn, {
                 "image": "translation models: the picture to restyle",
                 "reference": "reference pictures (repeat the field), weighted by "
                 "reference_weights"}, json_too=True, repeated={"reference": 8}))
async def mix_route(request: Request, state: ServiceState = Depends(get_state)) -> Any:
    """A blend of styles (and reference pictures) with weights -> one PNG.

    Noise models generate; translation models restyle the uploaded `image`.
    """
    from ...pipelines.style import Restyler, mix

    body, files = await read_request(request, MixIn, files=("image", "reference"),
                                     json_fields=("weights", "reference_weights"),
                                     list_fields=("reference_weights",),
                                     settings=state.settings)
    image = one_file(files, "image", required=False, what="the picture to restyle")
    refs = files.get("reference", [])
    if len(refs) > 8:
        raise BadRequest(f"at most 8 reference pictures, got {len(refs)}")
    if body.reference_weights and len(body.reference_weights) != len(refs):
        raise BadRequest(f"{len(body.reference_weights)} reference_weights for {len(refs)} "
                         "reference picture(s): give one weight per picture", code="bad_weight")
    if not body.weights and not refs:
        raise BadRequest('give weights over styles, e.g. {"ink": 0.7, "neon": 0.3}, and/or '
                         "reference pictures", code="missing_style")
    seed = new_seed(body.seed)
    size = checked_size(body.size)

    async def work() -> Any:
        loaded = await loaded_model(state, body.model)

        def _mix(model: Any) -> Any:
            pairs: list[tuple[Any, float]] = [(style_text(model, k), w)
                                              for k, w in body.weights.items()]
            ref_pics = [picture(model, r, "reference", reference=True) for r in refs]
            weights = body.reference_weights or [1.0] * len(ref_pics)
            pairs += list(zip(ref_pics, weights, strict=True))
            src = picture(model, image, "image", size=size) if image is not None else None
            keep_pictures(src, *ref_pics)
            ref_style = style_text(model, body.reference_style) if body.reference_style \
                else None
            r = Restyler(model, device=state.device, size=size)
            if ref_style is not None:
                if src is not None:
                    r.set_image(src)
                recipe = r.build(pairs, op="mix", seed=seed, strength=body.strength,
                                 pixel_blend=body.pixel_blend, reference_style=ref_style,
                                 crossover=body.crossover)
                return r.run(recipe)
            return mix(model, pairs, source=src, seed=seed, crossover=body.crossover,
                       strength=body.strength, pixel_blend=body.pixel_blend,
                       device=state.device, restyler=r)

        # the shared warm model: a blend is a soft-label input, it changes no shared state
        return await asyncio.to_thread(_mix, loaded.model)

    image_out = await _with_timeout(state.admission.run(work()),
                                    state.settings.generate_timeout_s)
    count_images(state, [image_out])
    if not body.save:
        return png_response(image_out.array, image_out.metadata)
    return await respond_with_images([image_out], single_png=True)


# -- interpolate -------------------------------------------------------------------------------
@router.post("/interpolate", response_class=Response,
             responses={200: {"content": {"image/gif": {}}, "description": "an animated GIF; "
                              "its comment holds the endpoints' recipe"},
                        **INFERENCE},
             openapi_extra=form_schema(InterpolateIn, {
                 "image": "translation models: the picture to restyle",
                 "from_reference": "start at this picture's style",
                 "to_reference": "end at this picture's style"}, json_too=True))
async def interpolate_route(request: Request, state: ServiceState = Depends(get_state)) -> Any:
    """Frames from one style (or seed, or reference) to another, as an animated GIF."""
    from ...pipelines.animate import interpolate, write_animation
    from ...pipelines.style import Restyler

    body, files = await read_request(request, InterpolateIn,
                                     files=("image", "from_reference", "to_reference"),
                                     settings=state.settings)
    image = one_file(files, "image", required=False, what="the picture to restyle")
    ends = [one_file(files, f"{k}_reference", required=False, what="a reference picture")
            for k in ("from", "to")]
    for text, ref, k in ((body.from_, ends[0], "from"), (body.to, ends[1], "to")):
        if (text is None) == (ref is None):
            raise BadRequest(f"give exactly one of `{k}` (a style) or `{k}_reference` "
                             "(a picture)", code="missing_style")
    size = checked_size(body.size)
    facts: dict[str, str] = {}

    async def work() -> bytes:
        loaded = await loaded_model(state, body.model)

        def _animate(model: Any) -> bytes:
            a = style_text(model, body.from_) if body.from_ \
                else picture(model, ends[0], "from", reference=True)
            b = style_text(model, body.to) if body.to \
                else picture(model, ends[1], "to", reference=True)
            pin = style_text(model, body.style) if body.style else None
            src = picture(model, image, "image", size=size) if image is not None else None
            keep_pictures(src, *(p for p in (a, b) if not isinstance(p, str)))
            frames = interpolate(model, a, b, source=src, frames=body.frames, seed=body.seed,
                                 style=pin, pingpong=body.pingpong, device=state.device,
                                 restyler=Restyler(model, device=state.device, size=size))
            first = frames[0].metadata
            facts.update({k: first[k] for k in ("width", "height", "drawn_at", "tiles", "size")
                          if first.get(k)})
            tmp = state.settings.tmp_dir / f"interp-{uuid.uuid4().hex}.gif"
            try:
                write_animation(frames, tmp, fps=body.fps, scale=body.scale)
                return tmp.read_bytes()
            finally:
                tmp.unlink(missing_ok=True)

        return await asyncio.to_thread(_animate, loaded.model)

    gif = await _with_timeout(state.admission.run(work()), state.settings.generate_timeout_s)
    headers = {f"X-Polychrome-{k.replace('_', '-').title()}": v for k, v in facts.items()}
    return Response(gif, media_type="image/gif",
                    headers={**headers, "X-Polychrome-Frames": str(body.frames),
                             "Content-Disposition": 'inline; filename="interpolation.gif"'})


# -- regenerate from the gallery -------------------------------------------------------------
@router.post("/images/{image_id:int}/regenerate", response_class=Response,
             responses=PNG_RESPONSES)
async def regenerate_image(image_id: int = Path(ge=1, le=2**62),
                           state: ServiceState = Depends(get_state)) -> Any:
    """Make a gallery image again from its metadata (same model version, seed, recipe).

    Restored pictures are restored again from their kept input; upscaled ones are made,
    then upscaled by the same sr model version. X-Polychrome-Identical says whether the
    pixels equal the stored image's.
    """
    from ...imageio import decode_image
    from ...pipelines.generate import regenerate
    from ...pipelines.style import regenerate_style
    from .restore import regenerate_restored

    info = await asyncio.to_thread(gallery.get_image, image_id)
    meta: dict[str, str] = dict(info["metadata"])
    if not meta.get("model"):
        raise PolychromeError(f"image {image_id} has no model in its metadata",
                              code="bad_metadata")
    spec = f"{meta['model']}:{meta['version']}" if meta.get("version") else meta["model"]

    base = _before_upscale(meta)

    async def work() -> Any:
        loaded = await loaded_model(state, spec)
        sr = await upscaler_for(state, int(meta["upscale"]), meta["upscaled_by"]) \
            if "upscaled_by" in meta else None

        def made() -> Any:
            if "recipe" not in base:
                if base.get("task") and base.get("input_sha256"):  # POST /api/restore
                    return regenerate_restored(base, loaded.model, state.device)
                return regenerate(base, model=loaded.model, device=state.device)
            source = kept_picture(base["source_sha256"]) if base.get("source_sha256") else None
            refs = [kept_picture(s) for s in base.get("reference_sha256s", "").split(",") if s]
            return regenerate_style(base, source, refs, model=loaded.model, device=state.device)

        def run() -> Any:
            return upscale_all([made()], sr, int(meta.get("upscale") or 1), state.device)[0]

        return await asyncio.to_thread(run)

    image = await _with_timeout(state.admission.run(work()),
                                state.settings.generate_timeout_s)
    original = await asyncio.to_thread(lambda: decode_image(gallery.image_path(image_id),
                                                            max_pixels=own_pixels_cap()))
    same = original.shape == image.array.shape and bool(np.array_equal(original, image.array))
    count_images(state, [image])
    response = await respond_with_images([image], single_png=True)
    response.headers["X-Polychrome-Identical"] = "true" if same else "false"
    response.headers["X-Polychrome-Regenerated-From"] = str(image_id)
    return response


def _before_upscale(meta: dict[str, str]) -> dict[str, str]:
    """The metadata of an upscaled image as it was before the cascade (its size divided
    back), so the first model remakes exactly what the sr model was given."""
    if "upscaled_by" not in meta:
        return meta
    try:
        s = int(meta["upscale"])
        base = {k: v for k, v in meta.items() if k not in ("upscaled_by", "upscale")}
        for k in ("width", "height"):
            if base.get(k):
                base[k] = str(int(base[k]) // s)
    except (KeyError, ValueError, ZeroDivisionError):
        raise PolychromeError("bad upscale facts in the image's metadata",
                              code="bad_metadata") from None
    return base
