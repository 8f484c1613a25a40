"""The FastAPI application: routers, one error format, guards, metrics, warm state."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import PolychromeError
from ..persistence.gallery import store_generated
from ..settings import Settings, get_settings
from .admission import AdmissionCollector, AdmissionController, reserve_threads
from .deps import ServiceState
from .errors import RateLimited
from .inference import MicroBatcher, PipelineCache
from .methods import install_method_guard
from .observability import Metrics, MetricsMiddleware
from .openapi import install_openapi
from .routers import (
    datasets,
    generate,
    health,
    images,
    jobs,
    models,
    presets,
    restore,
    sessions,
    style,
)
from .security import (
    AuthRateLimitMiddleware,
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    HostOriginMiddleware,
    PathScrubMiddleware,
    server_path_replacements,
)

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            return f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PolychromeError)
    async def _polychrome_error(_req: Request, exc: PolychromeError) -> JSONResponse:
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
        status = getattr(exc, "http_status", 400)
        if status == 503:
            headers = {"Retry-After": str(max(1, int(getattr(exc, "retry_after", 5) + 0.999)))}
        return error_response(status, exc.code, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _bug(_req: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        log.exception("internal error")
        # uvicorn drops the connection after an unhandled error: say so, so a client does
        # not send its next request on it
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__})",
                              {"Connection": "close"})


def create_app(settings: Settings | None = None, *, batching: bool | None = None) -> FastAPI:
    """The API app. `batching` overrides settings.batching (the benchmark compares both)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    # Request bodies above 1 MiB spool to a temporary file (Starlette's multipart parser
    # gives no directory): keep them in the storage root's scratch space, never in the
    # system's /tmp outside it.
    tempfile.tempdir = str(settings.tmp_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = Metrics()
    state = ServiceState(
        settings=settings,
        metrics=metrics,
        cache=PipelineCache(settings.pipeline_cache_size, device, metrics),
        batcher=MicroBatcher(wait_ms=settings.batch_wait_ms, max_images=settings.batch_max,
                             device=device, metrics=metrics, finish=store_generated),
        device=device,
        admission=AdmissionController.from_settings(settings),
    )
    metrics.registry.register(AdmissionCollector(state.admission))
    if batching is not None:
        settings = settings.model_copy(update={"batching": batching})
        state.settings = settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from ..persistence.db import get_engine

        get_engine()  # open (and migrate) the database before the first request
        reserve_threads(state.admission)  # cheap routes' threads never wait behind inference
        yield
        await state.batcher.close()

    app = FastAPI(
        title="Polychrome",
        version=__version__,
        description="Import image collections, train GANs, generate style-diverse images.",
        lifespan=lifespan,
        responses={
            400: {"model": _error_model(), "description": "Bad request"},
            422: {"model": _error_model(), "description": "Invalid input"},
        },
    )
    app.state.service = state
    _install_error_handlers(app)
    for r in (health, datasets, jobs, models, generate, images):
        app.include_router(r.router)
    for r in (style, sessions, presets):  # style routes, restyle sessions, training presets
        app.include_router(r.router)
    app.include_router(restore.router)  # super-resolution, inpainting, colorization
    from ..web import mount_web

    mount_web(app)  # the page at / (static files; it calls the API like any client)
    install_method_guard(app)  # 405 with every method a path takes in `Allow`
    install_openapi(app, settings)  # error answers, settings' limits, links

    # Outermost first when the request arrives: metrics see every answer, including
    # the guards' 401/413/429.
    app.add_middleware(AuthRateLimitMiddleware, api_keys=settings.api_key_set,
                       rate_per_minute=settings.rate_limit,
                       on_limited=metrics.rate_limited.inc)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyTimeoutMiddleware, timeout_s=settings.body_timeout_s)
    # Host (DNS rebinding) and Origin (cross-site requests) before keys are even looked at.
    app.add_middleware(HostOriginMiddleware, allowed_hosts=settings.allowed_hosts,
                       allowed_origins=settings.allowed_origins, bound_host=settings.host)
    app.add_middleware(PathScrubMiddleware, replacements=server_path_replacements(settings))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _error_model() -> type:
    from .schemas import ErrorBody

    return ErrorBody
