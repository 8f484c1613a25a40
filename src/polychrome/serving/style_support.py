"""Plumbing for the style routes: request parsing, safe style text, pictures, PNG answers.

Nothing here computes a style: routes/style.py calls polychrome.pipelines.style /
animate for that. This module only turns HTTP inputs into what those functions take
and keeps the pictures a gallery image needs to be regenerated later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from ..errors import ImageRejected, NotFound, PolychromeError
from ..imageio import decode_image, encode_png
from ..models.base import GANModel
from ..settings import Settings, get_settings
from ..utils.atomic import atomic_write_bytes
from .errors import BadRequest, PayloadTooLarge
from .openapi import INFERENCE

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Files = dict[str, list[tuple[str, bytes]]]  # form field -> [(filename, bytes)]

MAX_FILES = 16  # an input, its references and a little slack
MAX_FIELDS = 64


def _validate(model_cls: type[M], data: dict[str, Any]) -> M:
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        # The app's handler turns this into the one 422 error body.
        raise RequestValidationError(e.errors()) from None


async def read_request(request: Request, model_cls: type[M], *, files: tuple[str, ...] = (),
                       json_fields: tuple[str, ...] = (), list_fields: tuple[str, ...] = (),
                       settings: Settings | None = None) -> tuple[M, Files]:
    """A JSON body or a multipart form -> (validated fields, uploaded files by field).

    Multipart values are text: `json_fields` are parsed as JSON, `list_fields` may repeat,
    and empty values count as "not given" (what an HTML form sends for an empty input).
    """
    settings = settings or get_settings()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"request body is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise BadRequest("the JSON body must be an object")
        return _validate(model_cls, data), {}
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        what = f"files ({', '.join(files)}) " if files else ""
        raise BadRequest(f"send multipart/form-data {what}or application/json, not "
                         f"{ctype or 'no Content-Type'}", code="unsupported_media_type")
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS)
    except Exception as e:  # malformed multipart is the client's mistake, never a 500
        raise BadRequest(f"malformed form body: {e}") from None
    uploads: Files = {name: [] for name in files}
    fields: dict[str, Any] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in uploads:
                    expected = ", ".join(files) if files else "none"
                    raise BadRequest(f"unexpected file field {key!r} (file fields: {expected})")
                limit = settings.max_member_bytes
                data = await value.read(limit + 1)
                if len(data) > limit:
                    raise PayloadTooLarge(f"{key}: file larger than {limit} bytes "
                                          "(max_member_bytes)")
                uploads[key].append((value.filename or key, data))
                continue
            if value == "":
                continue
            if key in json_fields:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise BadRequest(f"form field {key!r} must be JSON, e.g. "
                                     '{"ink": 0.7, "neon": 0.3}') from None
            if key in list_fields:  # repeated, or one JSON list
                fields.setdefault(key, []).extend(value if isinstance(value, list) else [value])
            elif key in fields:
                raise BadRequest(f"form field {key!r} given more than once")
            else:
                fields[key] = value
    finally:
        await form.close()
    return _validate(model_cls, fields), uploads


def one_file(files: Files, field: str, *, required: bool, what: str) -> tuple[str, bytes] | None:
    got = files.get(field, [])
    if len(got) > 1:
        raise BadRequest(f"upload one {field!r} file ({what}), got {len(got)}")
    if not got:
        if required:
            raise BadRequest(f"missing file field {field!r} ({what})", code="missing_input")
        return None
    name, data = got[0]
    if not data:
        raise ImageRejected(f"{field} {name!r}: empty file", code="corrupt")
    return got[0]


# -- style text ------------------------------------------------------------------------------
def style_text(model: GANModel, text: str) -> str:
    """A style the client typed, checked so it can never name a file on the server.

    The pipeline's parser also accepts a path to a reference picture (for the CLI); over
    HTTP, reference pictures are uploaded, so only learned styles (name or index),
    `bank:NAME`, `seed:N` and saved style names pass.
    """
    from ..pipelines import stylebank
    from ..sampling import style_index

    t = text.strip()
    if t.startswith((stylebank.BANK_PREFIX, "seed:")):
        return t  # resolved by the pipeline, which never reads a path for these
    try:
        style_index(model, t)
        return t
    except PolychromeError:
        pass
    saved: list[str] = []
    if stylebank.code_kind(model):
        if stylebank.has_style(model, t):
            return t
        saved = [e["name"] for e in stylebank.list_bank(model)]
    names = model.style_names
    msg = (f"unknown style {t!r}; valid styles: {', '.join(names)} (or an index "
           f"0..{len(names) - 1}, seed:N")
    if saved:
        msg += f", saved styles: {', '.join('bank:' + n for n in saved)}"
    raise PolychromeError(msg + ")", code="unknown_style")


def picture(model: GANModel, upload: tuple[str, bytes], field: str, *,
            size: int | None = None, reference: bool = False) -> Any:
    """Uploaded bytes -> the model's Picture, through the one safe decoder.

    `size`: the working size of a native model (None = the picture's own, capped), as
    `checked_size` gives it; the Restyler that renders it must have the same. `reference`:
    a style reference (loaded as the CLI loads `--reference`, independent of `size`).
    """
    from ..pipelines.style import load_picture

    name, data = upload
    return load_picture(model, data, label=f"{field} {name!r}", size=size, reference=reference)


def checked_size(size: int | str | None) -> int | None:
    """A request's validated `size` ('native' or N >= 8) -> None (native) or N, checked
    against the server's cap (PolychromeError too_large, a 400) before any work starts."""
    from ..pipelines.style_codes import parse_size

    return parse_size(size)


# -- pictures kept for regeneration ------------------------------------------------------------
def _inputs_dir() -> Any:
    return get_settings().cache / "style-inputs"


def keep_pictures(*pictures: Any) -> None:
    """Store each picture's pixels by sha256, so the gallery can regenerate an image from
    its metadata later (the recipe names its inputs by pixel hash).

    The pixels are the working array the model saw: R x R for whole-picture models, the
    working size (up to native_max_side on a side) for native ones. Fast PNG compression:
    a large picture is kept in well under a second, and the file is only a cache.
    """
    for pic in pictures:
        if pic is None:
            continue
        path = _inputs_dir() / f"{pic.sha256}.png"
        if not path.is_file():
            atomic_write_bytes(path, encode_png(pic.array, compress_level=1))


def kept_picture(sha256: str) -> np.ndarray:
    if not (len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)):
        raise PolychromeError(f"bad picture hash {sha256[:16]!r}", code="bad_metadata")
    path = _inputs_dir() / f"{sha256}.png"
    if not path.is_file():
        raise NotFound(f"the input picture {sha256[:12]}… of this image is no longer kept "
                       "on the server: restyle it again from the original",
                       code="missing_input")
    return decode_image(path, max_pixels=own_pixels_cap())  # (H, W, 3): the working array


def own_pixels_cap() -> int:
    """The pixel cap for decoding the server's own files (kept pictures, gallery images):
    a working size of up to native_max_side on a side may exceed the upload cap
    (max_pixels) when a small picture was rendered at a large `size`."""
    settings = get_settings()
    return max(settings.max_pixels, settings.native_max_side ** 2)


# -- answers ------------------------------------------------------------------------------------
def png_response(array: np.ndarray, meta: dict[str, str],
                 extra: dict[str, str] | None = None) -> Response:
    """A PNG carrying its metadata (text chunks) that is not recorded in the gallery."""
    headers = {f"X-Polychrome-{k.replace('_', '-').title()}": str(v) for k, v in meta.items()
               if str(v).isascii() and k != "recipe"}
    headers.update(extra or {})
    headers["Cache-Control"] = "no-store"
    return Response(encode_png(array, meta), media_type="image/png", headers=headers)


# -- route helpers ------------------------------------------------------------------------------
PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "the image, metadata in its text "
          "chunks and X-Polychrome-* headers"},
    **INFERENCE}


# The pictures the one safe decoder reads (said in every picture field's description).
PICTURE_TYPES = "PNG, JPEG, GIF, WebP, BMP or TIFF"


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON schema as a multipart text field: given or not, never null."""
    out = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    variants = [v for v in out.get("anyOf", ()) if v != {"type": "null"}]
    if "anyOf" in out and len(variants) != len(out["anyOf"]):
        del out["anyOf"]
        if len(variants) == 1:
            out.update(variants[0])
        else:
            out["anyOf"] = variants
    return out


def form_schema(model: type[BaseModel], files: dict[str, str], *, json_too: bool,
                required: tuple[str, ...] = (),
                repeated: dict[str, int] | None = None) -> dict[str, Any]:
    """OpenAPI request body: multipart (fields + files) and, optionally, JSON.

    Multipart fields are text (JSON-typed ones carry JSON), given or left out (no null).
    `files` are pictures (any format the decoder reads): `required` ones must be uploaded,
    `repeated` ones may be sent up to N times. The model's FORM_RULES (which fields and
    files go together) apply to the multipart body; its own JSON schema to the JSON one.
    """
    repeated = repeated or {}
    schema = model.model_json_schema(by_alias=True)
    props = {k: _form_field(v) for k, v in schema.get("properties", {}).items()}
    for name, desc in files.items():
        picture = {"type": "string", "format": "binary"}
        desc = f"{desc} ({PICTURE_TYPES})"
        props[name] = ({"type": "array", "items": picture, "minItems": 1,  # none: not given
                        "maxItems": repeated[name], "description": desc} if name in repeated
                       else {**picture, "description": desc})
    form: dict[str, Any] = {"type": "object", "properties": props,
                            "required": [*schema.get("required", []), *required],
                            "additionalProperties": False}
    rules = getattr(model, "FORM_RULES", None)
    if rules:
        form["allOf"] = list(rules)
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    if json_too:
        content["application/json"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


async def loaded_model(state: Any, spec: str) -> Any:
    """A registered model, warm from the pipeline cache (404 for an unknown one)."""
    from .deps import checked_ref

    return await asyncio.to_thread(state.cache.get, checked_ref(spec, "model name"))


def new_seed(seed: int | None) -> int:
    return seed if seed is not None else secrets.randbelow(2**31)


def count_images(state: Any, images: list[Any]) -> None:
    if images:
        state.metrics.images.labels(images[0].metadata.get("model", "")).inc(len(images))
