"""Live restyle sessions: upload a picture once, then render styles with the decoder only.

POST /api/restyle/sessions encodes the picture's content once (see
serving/style_sessions.py); /render takes a style or weights, strength and seed and
runs only the mapping / style encoder and G.decode. Live previews pass save=false so
a moving slider does not fill the gallery.

Models trained on crops run at the picture's own size: their /render draws a preview
(longer side <= 512) and /full renders the same recipe at full size (native, or `size`)
and saves it to the gallery. Whole-picture models answer /full with their drawing at
their resolution (X-Polychrome-Drawn-At), like /render.

Sessions are kept on the shared storage (`Settings.sessions_dir`): any replica of the API
answers for any session, rebuilding it from there when it is not in its memory.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from ..cascade import upscale_all, upscaler_for
from ..deps import ServiceState, get_state
from ..errors import BadRequest
from ..openapi import INFERENCE
from ..schemas import (
    FullRenderIn,
    RenderIn,
    StyleReferenceIn,
    StyleReferenceOut,
    StyleSessionIn,
    StyleSessionOut,
)
from ..style_sessions import SessionStore, StyleSession
from ..style_support import (
    PNG_RESPONSES,
    checked_size,
    count_images,
    form_schema,
    keep_pictures,
    loaded_model,
    one_file,
    picture,
    png_response,
    read_request,
    style_text,
)
from .generate import _with_timeout, respond_with_images

router = APIRouter(prefix="/api/restyle/sessions", tags=["style"])
# Any text: the store answers 404 for an id that is not of its form, before any file access.
SessionId = Path(description="the session's id, as POST /api/restyle/sessions answered it")
_STORE_LOCK = threading.Lock()


def _sessions(request: Request) -> SessionStore:
    """One session store per app (per web process), created on first use; its sessions
    live on the shared storage, so every replica can rebuild every session."""
    with _STORE_LOCK:
        store = getattr(request.app.state, "style_sessions", None)
        if store is None:
            state: ServiceState = request.app.state.service
            settings = state.settings
            store = request.app.state.style_sessions = SessionStore(
                root=settings.sessions_dir, loader=lambda key: state.cache.get(key).model,
                device=state.device, ttl_s=settings.session_ttl_s, keep=keep_pictures)
        return store


async def _session(sessions: SessionStore, session_id: str,
                   state: ServiceState) -> StyleSession:
    """The session: from memory, or rebuilt from storage (off the event loop)."""
    return await _with_timeout(asyncio.to_thread(sessions.get, session_id),
                               state.settings.generate_timeout_s)


@router.post("", status_code=201, response_model=StyleSessionOut, responses=INFERENCE,
             openapi_extra=form_schema(StyleSessionIn, {"image": "the picture to restyle"},
                                       json_too=False, required=("image",)))
async def open_session(request: Request, state: ServiceState = Depends(get_state),
                       sessions: SessionStore = Depends(_sessions)) -> Any:
    """Upload a picture once: its content encoding is computed now and kept, so each
    render of the session (a style, weights, strength) only runs the decoder."""
    from ...pipelines.style import require_translation

    body, files = await read_request(request, StyleSessionIn, files=("image",),
                                     settings=state.settings)
    image = one_file(files, "image", required=True, what="the picture to restyle")

    async def work() -> StyleSession:
        loaded = await loaded_model(state, body.model)

        def run() -> StyleSession:
            require_translation(loaded.model, "restyle")
            src = picture(loaded.model, image, "image")
            session = sessions.open(loaded.key, loaded.model, src, state.device,
                                    upload=image[1])
            keep_pictures(session.source)  # what saved previews restyle (regeneration)
            return session

        return await asyncio.to_thread(run)

    session = await _with_timeout(state.admission.run(work()),
                                  state.settings.generate_timeout_s)
    return JSONResponse(session.describe(), status_code=201,
                        headers={"Location": f"/api/restyle/sessions/{session.id}"})


@router.get("/{session_id}", response_model=StyleSessionOut)
def show_session(session_id: str = SessionId,
                 sessions: SessionStore = Depends(_sessions)) -> Any:
    return sessions.get(session_id).describe()


@router.delete("/{session_id}", status_code=204, response_class=Response)
def close_session(session_id: str = SessionId,
                  sessions: SessionStore = Depends(_sessions)) -> Response:
    sessions.close(session_id)
    return Response(status_code=204)


@router.post("/{session_id}/references", status_code=201, response_model=StyleReferenceOut,
             responses=INFERENCE,
             openapi_extra=form_schema(StyleReferenceIn, {"reference": "a reference picture"},
                                       json_too=False, required=("reference",)))
async def add_reference(request: Request, session_id: str = SessionId,
                        state: ServiceState = Depends(get_state),
                        sessions: SessionStore = Depends(_sessions)) -> Any:
    """Add a reference picture to a session; use the returned id as a style or weight key."""
    session = await _session(sessions, session_id, state)
    _, files = await read_request(request, StyleReferenceIn, files=("reference",),
                                  settings=state.settings)
    ref = one_file(files, "reference", required=True, what="a reference picture")

    def run() -> dict[str, Any]:
        pic = picture(session.restyler.model, ref, "reference", reference=True)
        keep_pictures(pic)
        with session.lock:
            rid = session.add_reference(pic, ref[1])  # the file: other replicas decode it
        return {"reference": rid, "sha256": pic.sha256, "label": pic.label}

    out = await state.admission.run(asyncio.to_thread(run))
    return JSONResponse(out, status_code=201)


def _pairs(session: StyleSession, body: RenderIn) -> list[tuple[Any, float]]:
    """The (style, weight) pairs of a render request; `ref:<sha256>` -> the session's
    reference picture, other styles checked so they never name a server file."""
    model = session.restyler.model

    def spec(text: str) -> Any:
        return session.style_spec(text) if text.startswith("ref:") else style_text(model, text)

    if body.weights is not None:
        if not body.weights:
            raise BadRequest("weights is empty: give at least one style", code="bad_weight")
        return [(spec(k), w) for k, w in body.weights.items()]
    return [(spec(body.style), 1.0)]


def _build(session: StyleSession, body: RenderIn) -> Any:
    """The request's recipe, built (and its styles resolved) on the session's preview
    Restyler; call with the session's lock held."""
    pairs = _pairs(session, body)
    model = session.restyler.model
    ref_style = style_text(model, body.reference_style) if body.reference_style else None
    return session.restyler.build(pairs, op="mix" if len(pairs) > 1 else "restyle",
                                  seed=body.seed, strength=body.strength,
                                  pixel_blend=body.pixel_blend, reference_style=ref_style)


@router.post("/{session_id}/render", response_class=Response, responses=PNG_RESPONSES)
async def render_session(body: RenderIn, session_id: str = SessionId,
                         state: ServiceState = Depends(get_state),
                         sessions: SessionStore = Depends(_sessions)) -> Any:
    """Render the session's picture in a style or a blend (weights): decoder only.

    Models trained on crops render a preview (longer side <= 512; /full renders the
    same recipe at full size). The recipe becomes the session's current one.
    """
    session = await _session(sessions, session_id, state)
    if (body.style is None) == (body.weights is None):
        raise BadRequest("give either `style` or `weights`", code="missing_style")

    def run() -> Any:
        with session.lock:
            recipe = _build(session, body)
            image = session.restyler.run(recipe)
            session.remember_recipe(recipe)
            return image

    image = await _with_timeout(state.admission.run(asyncio.to_thread(run)),
                                state.settings.generate_timeout_s)
    count_images(state, [image])
    if body.save:
        return await respond_with_images([image], single_png=True)
    return png_response(image.array, image.metadata, {"X-Polychrome-Session": session.id})


@router.post("/{session_id}/full", response_class=Response, responses=PNG_RESPONSES)
async def render_full(body: FullRenderIn, session_id: str = SessionId,
                      state: ServiceState = Depends(get_state),
                      sessions: SessionStore = Depends(_sessions)) -> Any:
    """Render the session's recipe at full size and save it to the gallery.

    The recipe is the request's (style or weights, strength, seed, ...) or, with neither
    `style` nor `weights`, the session's last render. It is built once, on the preview,
    so the full-size image has the preview's style (the same codes, references and
    seed). `size`: 'native' (the picture's own, capped) or the longer side in pixels.
    Whole-picture models draw at their resolution either way (X-Polychrome-Drawn-At).
    `upscale` (2 or 4) hands the render to a super-resolution model (`upscaler`).
    """
    session = await _session(sessions, session_id, state)
    if body.style is not None and body.weights is not None:
        raise BadRequest("give either `style` or `weights` (or neither: the session's "
                         "last render)", code="bad_request")
    size = checked_size(body.size)

    async def work() -> Any:
        sr = await upscaler_for(state, body.upscale, body.upscaler,
                                session.restyler.model.style_names)
        return await asyncio.to_thread(
            lambda: upscale_all([rendered()], sr, body.upscale, state.device)[0])

    def rendered() -> Any:
        with session.lock:
            if body.style is None and body.weights is None:
                if session.last_recipe is None:
                    raise BadRequest("this session has rendered nothing yet: give `style` "
                                     "or `weights`", code="missing_style")
                recipe = session.last_recipe
            else:
                recipe = _build(session, body)
            if not session.native:
                return session.restyler.run(recipe)  # drawn at R x R, like a preview
            refs = list(session.references.values())
        full = session.full_restyler(size, state.device, refs)
        keep_pictures(full.source)  # regeneration replays this image from these pixels
        return full.run(recipe)

    image = await _with_timeout(state.admission.run(work()),
                                state.settings.generate_timeout_s)
    count_images(state, [image])
    extra = {"X-Polychrome-Session": session.id}
    if not body.save:
        return png_response(image.array, image.metadata, extra)
    response = await respond_with_images([image], single_png=True)
    response.headers.update(extra)
    return response
