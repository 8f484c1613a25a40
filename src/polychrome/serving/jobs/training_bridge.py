"""Train and eval jobs on top of polychrome.training / polychrome.metrics.

A train job owns a run directory chosen when it was queued. Any later attempt
(after a kill -9, a restart, a graceful shutdown) resumes that directory from
its latest checkpoint with `train(resume=run_dir)` -- the CLI's
`polychrome train --resume RUN_DIR` -- so a job is never restarted from scratch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ...db import ModelVersion, session_scope

if TYPE_CHECKING:
    from .runners import JobContext

log = logging.getLogger(__name__)


def _has_run(run_dir: Path) -> bool:
    from ...training.runs import CHECKPOINTS_DIR, CONFIG_NAME

    return (run_dir / CONFIG_NAME).is_file() or (run_dir / CHECKPOINTS_DIR).is_dir()


def _registered_from(run_dir: Path) -> dict[str, Any] | None:
    """The model version an earlier attempt already registered from this run, if any."""
    with session_scope() as s:
        row = s.scalars(select(ModelVersion).where(ModelVersion.source_run == str(run_dir))
                        .order_by(ModelVersion.version.desc())).first()
        if row is None:
            return None
        return {"name": row.name, "version": row.version, "arch": row.arch,
                "family": row.family, "styles": list(row.styles or [])}


def _model_name(cfg: Any) -> str:
    from ...training.runs import split_dataset_spec

    return cfg.name or f"{split_dataset_spec(cfg.dataset, None)[0]}-{cfg.model}"


def run(ctx: JobContext) -> dict[str, Any]:
    from ...training import TrainConfig, register_run_model, train
    from .runners import JobCancelled

    run_dir = Path(ctx.job["run_dir"])
    resuming = _has_run(run_dir)
    ctx.set(run_dir=str(run_dir))
    common = {"on_progress": ctx.on_progress, "should_stop": ctx.should_stop,
              "show_progress": False}
    if resuming:
        log.info("job %s: resuming %s (attempt %d)", ctx.id, run_dir, ctx.job["attempts"])
        result = train(resume=run_dir, **common)
    else:
        cfg = TrainConfig.from_dict(ctx.job["params"]["config"])
        result = train(cfg, run_dir=run_dir, **common)
    if result.stopped:
        raise JobCancelled()
    from ...training.runs import read_run_config

    cfg, _ = read_run_config(run_dir)
    model = _registered_from(run_dir)
    if model is None:
        model = register_run_model(run_dir, _model_name(cfg))
    out = result.to_json()
    out["resumed"] = resuming
    out["model"] = model
    return out


def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Evaluate a registered model against a dataset; metrics also go on the model card."""
    p = ctx.job["params"]
    from ...metrics import evaluate_model
    kwargs: dict[str, Any] = {k: p[k] for k in ("n", "extractor", "evaluator_steps")
                              if p.get(k) is not None}
    if p.get("metrics"):
        kwargs["metrics"] = tuple(p["metrics"])
    ctx.on_progress(0, 1)
    result = evaluate_model(p["model"], p["dataset"], **kwargs)  # also updates the model card
    ctx.on_progress(1, 1)
    return result
