"""Training choices for clients: architectures, presets, and a measured time estimate."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from fastapi import APIRouter, Depends, Query

from ..deps import ServiceState, checked_ref, get_state
from ..openapi import errors
from ..presets import ESTIMATOR, list_presets
from ..schemas import EstimateIn

router = APIRouter(prefix="/api", tags=["training"])


@router.get("/architectures")
def architectures() -> dict[str, Any]:
    """Every trainable architecture: name, family (noise | translation), one-line summary."""
    from ...models.registry import get_model_class, list_models

    items = []
    for name in list_models():
        cls = get_model_class(name)
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        items.append({"name": name, "family": cls.family,
                      "description": doc[0] if doc else ""})
    return {"items": items}


@router.get("/presets")
def presets(model: str = Query("dcgan", min_length=1, max_length=64,
                               description="architecture the presets are sized for")) -> Any:
    """quick / standard / quality as train-job fields for `model`."""
    return {"items": list_presets(checked_ref(model, "architecture"))}


@router.post("/presets/estimate", responses=errors(404))
async def estimate(body: EstimateIn, state: ServiceState = Depends(get_state)) -> Any:
    """How long a preset takes on THIS machine: trains each preset's exact job configuration
    for a few steps on the dataset in a separate process and times it after a warm-up step
    (cached for 10 minutes). The answer: the chosen preset's steps and ETA, the measured
    rate (seconds_per_step, images_per_second, cpu_seconds_per_step, threads, steps_timed,
    setup / warm-up / checkpoint seconds), `basis` (how it was measured, in words), `job`
    (the fields to POST to /api/jobs) and `presets` (every preset's steps, rate and ETA).
    Quick's steps are sized to about 5 minutes at the measured rate unless `steps` is given
    (`sizing` says how). `config` overrides the preset's run config as a train job's does
    (e.g. crop for a translator on crops, pix2pix's model_config task / scales)."""
    checked_ref(body.model, "architecture")
    checked_ref(body.dataset, "dataset")
    return await asyncio.to_thread(ESTIMATOR.estimate, state.settings, body.model,
                                   body.dataset, body.preset, steps=body.steps,
                                   resolution=body.resolution, batch_size=body.batch_size,
                                   config=body.config)
