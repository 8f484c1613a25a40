"""Jobs: create (train / eval / import), list, show, cancel, live events, sample grids."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ...errors import ConfigError, NotFound
from ...persistence import jobs as store
from ...settings import Settings, get_settings
from ...training.config import non_finite
from ..deps import checked_ref, get_app_settings
from ..jobs.queue import enqueue_job
from ..jobs.runners import uploads_dir
from ..openapi import errors
from ..presets import check_train_config, dataset_domains
from ..schemas import EvalJobIn, ImportJobIn, JobIn, JobList, JobOut, TrainJobIn

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/jobs", tags=["jobs"])

SAMPLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.png\Z")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
EVENT_POLL_S = 0.5
KEEPALIVE_S = 15.0


# -- validation before queueing: a bad request is a 4xx now, not a failed job later ----------
def _train_params(body: TrainJobIn, settings: Settings) -> dict[str, Any]:
    from ...models.registry import get_model_class
    from ...training.config import TrainConfig

    get_model_class(body.model)  # unknown architecture -> ModelError (400)
    from ...persistence.datasets import resolve_dataset

    # NotFound (404) / bad name (400)
    ref = resolve_dataset(checked_ref(body.dataset, "dataset"), body.dataset_version)
    if body.name is not None:
        from ...persistence.models import validate_model_name

        validate_model_name(body.name)
    overrides = {k: v for k, v in {
        "model": body.model, "dataset": body.dataset, "dataset_version": body.dataset_version,
        "steps": body.steps, "batch_size": body.batch_size, "resolution": body.resolution,
        "seed": body.seed, "name": body.name}.items() if v is not None}
    reserved = sorted(set(body.config) & set(overrides))
    if reserved:
        raise ConfigError(f"set {', '.join(reserved)} as top-level fields, not in config")
    cfg = {**body.config, **overrides}
    tc = TrainConfig.from_dict(cfg)  # unknown keys / bad values -> ConfigError (400)
    # The whole run as a worker would build it: limits, device, model config and size.
    check_train_config(tc, settings, num_domains=dataset_domains(ref))
    return {"config": cfg, "nproc": body.nproc}


def _eval_params(body: EvalJobIn) -> dict[str, Any]:
    from ...persistence.datasets import resolve_dataset
    from ...persistence.models import resolve_model

    resolve_model(checked_ref(body.model, "model"))
    resolve_dataset(checked_ref(body.dataset, "dataset"))
    return {"model": body.model, "dataset": body.dataset, "metrics": body.metrics, "n": body.n,
            "extractor": body.extractor, "evaluator_steps": body.evaluator_steps}


def _new_run_dir(settings: Settings, cfg: dict[str, Any], job_id: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = _SAFE.sub("_", f"{stamp}-{cfg['model']}-{cfg['dataset']}-{job_id[:8]}")
    return settings.to_stored(settings.runs_dir / name)


def _create(body: TrainJobIn | EvalJobIn | ImportJobIn, settings: Settings) -> dict[str, Any]:
    where = non_finite(body.model_dump())  # Python's JSON parser accepts NaN and Infinity
    if where is not None:
        raise ConfigError(f"{where} must be a finite number (not NaN or infinite)")
    from ..jobs.webhook import check_webhook

    check_webhook(body.webhook, settings.webhook_allow)  # loopback / private hosts -> 400
    job_id = uuid.uuid4().hex
    run_dir = None
    if isinstance(body, TrainJobIn):
        if body.nproc > settings.train_max_nproc:
            raise ConfigError(f"nproc {body.nproc} is above this server's limit of "
                              f"{settings.train_max_nproc} processes per training job "
                              "(setting train_max_nproc)")
        params = _train_params(body, settings)
        run_dir = _new_run_dir(settings, params["config"], job_id)
    elif isinstance(body, EvalJobIn):
        params = _eval_params(body)
    else:
        from ...persistence.datasets import validate_name
        from .datasets import stage_inbox_import

        validate_name(body.name)
        stage_inbox_import(job_id, body.path, settings)
        params = {"name": body.name, "source": f"inbox:{body.path}"}
    job = store.create_job(body.kind, params, queue_max=settings.queue_max,
                           webhook=body.webhook, run_dir=run_dir, job_id=job_id)
    enqueue_job(job_id)
    return job


@router.post("", status_code=202, response_model=JobOut, responses=errors(404, 503))
def create_job(body: JobIn = Body(...),
               settings: Settings = Depends(get_app_settings)) -> Any:
    """Queue a job. train: model (architecture), dataset, steps, batch_size, resolution,
    seed, name, config overrides; eval: model, dataset, metrics, n; import: name and a
    path in the server inbox. Returns the job (202); follow it at /api/jobs/{id}."""
    job = _create(body, settings)
    return JSONResponse(job, status_code=202, headers={"Location": f"/api/jobs/{job['id']}"})


@router.get("", response_model=JobList)
def list_jobs(state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None
              = Query(None),
              kind: Literal["train", "eval", "import"] | None = Query(None),
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9)) -> Any:
    return {"items": store.list_jobs(state=state, kind=kind, limit=limit, offset=offset)}


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str) -> Any:
    return store.get_job(job_id)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut,
             responses=errors(409))
def cancel_job(job_id: str) -> Any:
    """A queued job is cancelled at once; a running one checkpoints and stops."""
    job = store.request_cancel(job_id)
    if job["state"] == "cancelled" and job["kind"] == "import":
        shutil.rmtree(uploads_dir(job_id), ignore_errors=True)  # never going to run
    return JSONResponse(job, status_code=202)


@router.post("/{job_id}/retry", status_code=202, response_model=JobOut,
             responses={404: {"description": "No such job"},
                        409: {"description": "Not a failed or cancelled training job"},
                        503: {"description": "Job queue full"}})
def retry_job(job_id: str, settings: Settings = Depends(get_app_settings)) -> Any:
    """A failed or cancelled training job goes back to the queue and resumes from its
    run's latest checkpoint (the steps it trained are kept). 409 for any other state."""
    job = store.retry_job(job_id, queue_max=settings.queue_max)
    enqueue_job(job_id)
    return JSONResponse(job, status_code=202, headers={"Location": f"/api/jobs/{job_id}"})


# -- samples ---------------------------------------------------------------------------
def _samples_dir(job: dict[str, Any]) -> Path | None:
    # run_dir is kept relative to the storage root (the API never shows server paths)
    return get_settings().stored(job["run_dir"]) / "samples" if job.get("run_dir") else None


def _sample_files(job: dict[str, Any]) -> list[str]:
    d = _samples_dir(job)
    if d is None or not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if SAMPLE_RE.match(p.name) and p.is_file())


@router.get("/{job_id}/samples")
def list_samples(job_id: str) -> dict[str, Any]:
    job = store.get_job(job_id)
    return {"items": [{"file": f, "url": f"/api/jobs/{job_id}/samples/{f}"}
                      for f in _sample_files(job)]}


@router.get("/{job_id}/samples/{file}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
def get_sample(job_id: str, file: str) -> Any:
    """A sample grid the training run wrote (runs/<id>/samples/step-*.png)."""
    job = store.get_job(job_id)
    d = _samples_dir(job)
    if d is None or not SAMPLE_RE.match(file) or not (d / file).is_file():
        raise NotFound(f"job {job_id} has no sample {file!r}")
    return FileResponse(d / file, media_type="image/png")


# -- live events -------------------------------------------------------------------------
def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _progress_view(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in ("state", "step", "total", "progress", "eta_seconds", "metrics")}


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events: `state`, `progress` (with losses), `sample` (new grid URLs),
    and a final `end` carrying the whole job."""
    job = await asyncio.to_thread(store.get_job, job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        last_state = last_progress = None
        seen: set[str] = set()
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        current = job
        while True:
            out: list[bytes] = []
            if current["state"] != last_state:
                last_state = current["state"]
                out.append(_sse("state", {"state": last_state}))
            view = _progress_view(current)
            if view != last_progress:
                last_progress = view
                out.append(_sse("progress", view))
            for f in await asyncio.to_thread(_sample_files, current):
                if f not in seen:
                    seen.add(f)
                    out.append(_sse("sample", {"file": f,
                                               "url": f"/api/jobs/{job_id}/samples/{f}"}))
            if current["state"] in store.FINAL_STATES:
                out.append(_sse("end", current))
                yield b"".join(out)
                return
            if not out and loop.time() - last_sent > KEEPALIVE_S:
                out.append(b": keep-alive\n\n")  # proxies drop silent connections
            if out:
                last_sent = loop.time()
                yield b"".join(out)
            await asyncio.sleep(EVENT_POLL_S)
            if await request.is_disconnected():
                return
            current = await asyncio.to_thread(store.get_job, job_id)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
