"""What each job kind does, through the same store / training / metrics functions as the CLI."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import PolychromeError
from ...persistence import jobs as store
from ...settings import get_settings

if TYPE_CHECKING:
    from .worker import Worker, _Lease

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The job stopped cooperatively (cancel, shutdown or lost lease)."""


class JobInterrupted(Exception):
    """The job must be retried later (e.g. the worker is shutting down)."""


def uploads_dir(job_id: str) -> Path:
    """Where the API stages a job's uploaded files (inside home, deleted after import)."""
    return get_settings().uploads_dir / job_id


def _json_safe(logs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (logs or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            if isinstance(v, str | bool) or v is None:
                out[str(k)] = v
            continue
        out[str(k)] = f if math.isfinite(f) else None
    return out


class JobContext:
    """Progress reporting and the stop signal handed to a running job."""

    def __init__(self, job: dict[str, Any], worker: Worker, lease: _Lease):
        self.job = job
        self.worker = worker
        self.lease = lease
        self.interval = worker.settings.job_progress_interval_s
        self._last_write = 0.0
        self._pending: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._first_step: int | None = None

    @property
    def id(self) -> str:
        return self.job["id"]

    def should_stop(self) -> bool:
        return (self.lease.cancelled.is_set() or self.lease.lost.is_set()
                or self.worker.stopping.is_set())

    def on_progress(self, step: int, total: int, logs: dict[str, Any] | None = None) -> None:
        """Record progress; written to the Job row at most every `interval` seconds."""
        step, total = int(step), int(total)
        if self._first_step is None:
            # A resumed run starts counting at its checkpoint: the ETA uses only this attempt.
            self._first_step = step
            self._t0 = time.monotonic()
        self._pending.update(step=step, total=total,
                             progress=min(1.0, step / total) if total > 0 else 0.0,
                             eta_seconds=self._eta(step, total))
        if logs:
            self._pending["metrics"] = _json_safe(logs)
        if time.monotonic() - self._last_write >= self.interval:
            self.flush()

    def set(self, **values: Any) -> None:
        """Write fields (e.g. run_dir) at once."""
        self._pending.update(values)
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        values, self._pending = self._pending, {}
        self._last_write = time.monotonic()
        try:
            store.save_progress(self.id, self.worker.id, **values)
        except Exception:  # progress is best effort; the lease thread notices real trouble
            log.warning("job %s: progress write failed", self.id, exc_info=True)

    def _eta(self, step: int, total: int) -> float | None:
        done = step - (self._first_step or 0)
        if done <= 0 or total <= 0:
            return None
        left = (time.monotonic() - self._t0) / done * max(0, total - step)
        return round(left, 1) if math.isfinite(left) else None


# -- kinds ---------------------------------------------------------------------------------
def run_import(ctx: JobContext) -> dict[str, Any]:
    from ...persistence.datasets import import_dataset

    p = ctx.job["params"]
    staged = uploads_dir(ctx.id)
    manifest = json.loads((staged / "manifest.json").read_text())
    if manifest["kind"] == "archive":
        src: Any = staged / manifest["file"]
    elif manifest["kind"] == "path":  # inside the server inbox, checked when queued
        src = Path(manifest["path"])
    else:
        # Uploaded names never become paths on our disk: files are staged by index.
        src = [(name, (staged / "files" / f"{i:06d}").read_bytes())
               for i, name in enumerate(manifest["names"])]

    def progress(done: int, total: int | None = None, *_: Any) -> None:
        ctx.on_progress(done, total or 0)
        if ctx.should_stop():
            raise JobCancelled()

    try:
        result = import_dataset(src, p["name"], progress=progress)
    except PolychromeError:
        shutil.rmtree(staged, ignore_errors=True)  # final: a retry would fail the same way
        raise
    shutil.rmtree(staged, ignore_errors=True)
    return result


def run_train(ctx: JobContext) -> dict[str, Any]:
    from . import training_bridge

    return training_bridge.run(ctx)


def run_eval(ctx: JobContext) -> dict[str, Any]:
    from . import training_bridge

    return training_bridge.evaluate(ctx)


RUNNERS: dict[str, Callable[[JobContext], dict[str, Any]]] = {
    "import": run_import,
    "train": run_train,
    "eval": run_eval,
}


def run_kind(ctx: JobContext) -> dict[str, Any]:
    kind = ctx.job["kind"]
    if kind not in RUNNERS:
        raise PolychromeError(f"unknown job kind {kind!r}", code="bad_job")
    return RUNNERS[kind](ctx) or {}
