"""Liveness, readiness (including inference saturation), metrics, and the worker list."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from ... import __version__
from ..deps import ServiceState, get_state
from ..observability import CONTENT_TYPE
from ..schemas import Health, Ready

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/api/health", response_model=Health)
async def health() -> dict[str, Any]:
    """The process answers (liveness). Needs no API key."""
    return {"status": "ok", "version": __version__}


def _readiness(state: ServiceState) -> dict[str, Any]:
    from ...models.registry import list_models
    from ...persistence import jobs as store
    from ...persistence.db import session_scope
    from ..jobs.queue import queued_messages

    checks: dict[str, Any] = {}
    try:
        with session_scope() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:
        checks["database"] = f"error: {type(e).__name__}: {e}"
    try:
        checks["queue_messages"] = queued_messages()
        checks["queue"] = "ok"
    except Exception as e:
        checks["queue"] = f"error: {type(e).__name__}: {e}"
    try:
        workers = store.live_workers(max(10.0, state.settings.job_lease_s * 2))
        checks["workers"] = len(workers)
    except Exception as e:
        checks["workers"] = f"error: {type(e).__name__}: {e}"
    try:
        # Models are loadable when the architecture registry imports and is non-empty.
        archs = list_models()
        checks["architectures"] = len(archs)
        checks["models"] = "ok" if archs else "error: no architectures registered"
    except Exception as e:
        checks["models"] = f"error: {type(e).__name__}: {e}"
    checks["warm_models"] = state.cache.keys()
    return checks


@router.get("/api/ready", response_model=Ready,
            responses={503: {"model": Ready, "description": "Not ready"}})
async def ready(state: ServiceState = Depends(get_state)) -> Any:
    """Database reachable, queue reachable, at least one live worker, models loadable,
    and inference not saturated (`saturated`: requests are being refused with 503
    `overloaded`; a load balancer then sends traffic elsewhere -- /api/health, liveness,
    stays 200)."""
    checks = await asyncio.to_thread(_readiness, state)
    # The admission controller lives on the event loop: read it here, not in the thread.
    checks["saturated"] = state.admission.saturated
    checks["inference"] = state.admission.snapshot()
    ok = (checks.get("database") == "ok" and checks.get("queue") == "ok"
          and isinstance(checks.get("workers"), int) and checks["workers"] > 0
          and checks.get("models") == "ok" and not checks["saturated"])
    body = {"ready": ok, "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: ServiceState = Depends(get_state)) -> Response:
    """Prometheus text exposition."""
    body = await asyncio.to_thread(state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/api/workers")
async def workers(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    """Job workers that sent a heartbeat recently."""
    from ...persistence import jobs as store

    items = await asyncio.to_thread(store.live_workers,
                                    max(10.0, state.settings.job_lease_s * 2))
    return {"items": items}
