"""The OpenAPI document at /openapi.json: the routes' own declarations, completed with
what every operation can answer and with this server's limits.

FastAPI builds the document from the routes (serving/schemas.py's models and each
route's `responses=`). This module adds, once, what no single route states:

- the error answers the guards in front of every route can give (bad Host 400, API key
  401, cross-site 403 on state-changing methods, slow body 408, body too large 413, rate
  limit 429) and 404 wherever a path names a resource, all with the one error body;
- limits that are settings (images per request, processes per train job, the largest
  working size) and the registered architectures and run-config keys, so a request the
  schema allows is one the server takes;
- links from the operations that create a resource to the ones that use it (a restyle
  session to its renders, a job to its events, an image to its gallery routes), which
  clients and contract tests follow;
- API-key security, when the server has keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..settings import Settings
from .schemas import ErrorBody
from .security import OPEN_PATHS

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "integer"}}}
STATE_CHANGING = ("post", "put", "patch", "delete")

# Status -> description; every one answers {"error": {"code", "message"}}.
DESCRIPTIONS = {
    400: "Bad request: a refused value, a malformed Host header or Content-Length",
    401: "API key missing or invalid (servers with api_keys)",
    403: "Cross-site request refused (Origin or Referer of another site)",
    404: "Not found",
    408: "The request body stopped arriving",
    409: "Conflict with the resource's state",
    413: "Request body or an uploaded file too large",
    422: "Invalid input (or an image the decoder refuses)",
    429: "Rate limit exceeded",
    503: "Overloaded or the job queue is full: try again after Retry-After",
    504: "Timed out (generate_timeout_s)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for a route: the error body under these statuses."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}


# The inference routes: an unknown model, a picture the decoder refuses, load shedding
# (serving/admission.py) and the generation timeout.
INFERENCE = errors(404, 422, 503, 504)

# Where an answer names what it created for later requests: (source method, path,
# status, parameter, runtime expression, the operations that take it: every path under a
# prefix ending in "/", or one path).
_LINKS = [
    ("post", "/api/restyle/sessions", "201", "session_id", "$response.body#/session",
     "/api/restyle/sessions/"),
    ("post", "/api/jobs", "202", "job_id", "$response.body#/id", "/api/jobs/"),
    ("post", "/api/datasets", "202", "job_id", "$response.body#/id", "/api/jobs/"),
]
# Answers that record an image in the gallery say its id in X-Polychrome-Image-Id.
_IMAGE_SOURCES = [("post", "/api/generate"), ("post", "/api/restyle"), ("post", "/api/mix"),
                  ("post", "/api/restore"), ("post", "/api/images/{image_id}/regenerate"),
                  ("post", "/api/restyle/sessions/{session_id}/render"),
                  ("post", "/api/restyle/sessions/{session_id}/full")]


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc.get("paths", {}).items()
            for method, op in ops.items() if isinstance(op, dict) and "responses" in op]


def _add_errors(path: str, method: str, op: dict[str, Any]) -> None:
    codes = [400, 413]
    if path not in OPEN_PATHS:
        codes += [401, 429]
    if method in STATE_CHANGING:
        codes.append(403)
    if "requestBody" in op:
        codes.append(408)
    if "{" in path:
        codes.append(404)
    if op.get("parameters") or "requestBody" in op:
        codes.append(422)
    responses = op["responses"]
    for code in codes:
        responses.setdefault(str(code), {"description": DESCRIPTIONS[code]})
    for code, response in responses.items():
        if code[0] in "45" and "content" not in response:  # declared with a description only
            response["content"] = {"application/json": {"schema": ERROR_REF}}
    for code in ("429", "503"):
        if code in responses and responses[code].get("content", {}).get(
                "application/json", {}).get("schema") == ERROR_REF:
            responses[code].setdefault("headers", RETRY_AFTER)


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc.get("components", {}).get("schemas", {}).get(name, {})


def _cap(schema: dict[str, Any], field: str, most: int) -> None:
    """Lower a field's maximum (wherever its integer variant is) to `most`."""
    prop = schema.get("properties", {}).get(field)
    if prop is None:
        return
    for variant in [prop, *prop.get("anyOf", [])]:
        if variant.get("type") == "integer":
            variant["maximum"] = min(variant.get("maximum", most), most)


def _apply_settings(doc: dict[str, Any], settings: Settings) -> None:
    """Limits that are settings, and the architectures and run-config keys."""
    from ..models.registry import list_models
    from ..training.config import TrainConfig

    archs = sorted(list_models())
    _cap(_schema(doc, "GenerateIn"), "n", settings.generate_max_n)
    _cap(_schema(doc, "TrainJobIn"), "nproc", settings.train_max_nproc)
    for name in ("TrainJobIn", "EstimateIn"):
        for field, most in (("steps", settings.train_max_steps),
                            ("batch_size", settings.train_max_batch_size),
                            ("resolution", settings.train_max_resolution)):
            _cap(_schema(doc, name), field, most)
    for name in ("TrainJobIn", "EstimateIn"):
        model = _schema(doc, name).get("properties", {}).get("model")
        if model is not None:
            model["enum"] = archs
    config = _schema(doc, "TrainJobIn").get("properties", {}).get("config")
    if config is not None:
        keys = sorted(f.name for f in dataclasses.fields(TrainConfig)
                      if f.name not in ("model", "dataset"))
        config["propertyNames"] = {"enum": keys}
    for path, _method, op in _operations(doc):
        for param in op.get("parameters", []):
            if path == "/api/presets" and param.get("name") == "model":
                param["schema"]["enum"] = archs
        for media in op.get("requestBody", {}).get("content", {}).values():
            schema = media.get("schema", {})
            props = schema.get("properties", {})
            if "size" in props:
                _cap(schema, "size", settings.native_max_side)
            if "variations" in props:
                _cap(schema, "variations", settings.generate_max_n)
    for name in ("FullRenderIn", "MixIn", "InterpolateIn"):
        _cap(_schema(doc, name), "size", settings.native_max_side)


def _operation_ids(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(method, path): op["operationId"] for path, method, op in _operations(doc)
            if "operationId" in op}


def _add_links(doc: dict[str, Any]) -> None:
    ids = _operation_ids(doc)
    paths = doc.get("paths", {})

    def link(source: tuple[str, str], status: str, param: str, expr: str,
             prefix: str) -> None:
        op = paths.get(source[1], {}).get(source[0])
        if op is None or status not in op["responses"]:
            return
        links = op["responses"][status].setdefault("links", {})
        for (method, path), op_id in sorted(ids.items()):
            taken = path == prefix or (prefix.endswith("/") and path.startswith(prefix))
            if taken and "{" + param + "}" in path and (method, path) != source:
                links[op_id] = {"operationId": op_id, "parameters": {param: expr}}

    for method, path, status, param, expr, prefix in _LINKS:
        link((method, path), status, param, expr, prefix)
    for source in _IMAGE_SOURCES:
        link(source, "200", "image_id", "$response.header.X-Polychrome-Image-Id",
             "/api/images/")


def _add_security(doc: dict[str, Any], settings: Settings) -> None:
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    schemes["Bearer"] = {"type": "http", "scheme": "bearer"}
    if not settings.api_key_set:
        return
    for path, _method, op in _operations(doc):
        if path not in OPEN_PATHS:
            op["security"] = [{"ApiKey": []}, {"Bearer": []}]


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                      description=app.description, routes=app.routes)
    for path, method, op in _operations(doc):
        _add_errors(path, method, op)
    _apply_settings(doc, settings)
    _add_links(doc)
    _add_security(doc, settings)
    return doc


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve build_openapi's document (built once, on the first request for it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
