"""A job worker process: take job ids from the queue, claim, run, heartbeat, report.

One job at a time per process (training already uses the cores); start several
processes for parallel jobs (`polychrome serve --workers N`, or more
`polychrome worker` processes on this or other machines sharing the database
and the queue).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any

from ...errors import PolychromeError
from ...persistence import jobs as store
from ...settings import Settings, get_settings
from .queue import enqueue_job, get_huey
from .runners import JobCancelled, JobContext, JobInterrupted, run_kind
from .webhook import post_webhook

log = logging.getLogger(__name__)

_CURRENT: Worker | None = None
SUPERVISOR_PID_ENV = "POLYCHROME_SUPERVISOR_PID"  # set by `serve` for the workers it starts
ORPHAN_GRACE_S = 30.0  # after its supervisor died: time to checkpoint before a hard exit


def current_worker() -> Worker | None:
    return _CURRENT


class _Lease:
    """Keeps a job's lease alive from a thread and relays the cancel flag."""

    def __init__(self, job_id: str, owner: str, lease_s: float):
        self.job_id, self.owner, self.lease_s = job_id, owner, lease_s
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id[:8]}",
                                        daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        # Renew at a third of the lease so two missed beats still leave it valid.
        interval = max(0.2, self.lease_s / 3)
        while not self._stop.wait(interval):
            try:
                ours, cancel = store.renew(self.job_id, self.owner, self.lease_s)
            except Exception:  # a busy database: try again next beat
                log.warning("job %s: lease renewal failed", self.job_id, exc_info=True)
                continue
            if not ours:
                log.error("job %s: lease lost; stopping", self.job_id)
                self.lost.set()
                return
            if cancel:
                self.cancelled.set()
            try:
                store.beat(self.owner, self.job_id)
            except Exception:
                log.debug("worker beat failed", exc_info=True)


class Worker:
    def __init__(self, settings: Settings | None = None, worker_id: str | None = None):
        self.settings = settings or get_settings()
        self.id = worker_id or store.new_worker_id()
        self.stopping = threading.Event()  # graceful shutdown requested
        self.current_job: str | None = None
        self._last_sweep = 0.0

    # -- the loop ------------------------------------------------------------------------
    def run(self, *, max_jobs: int | None = None, idle_exit_s: float | None = None) -> int:
        """Process jobs until stopped; returns how many jobs were run."""
        global _CURRENT
        _CURRENT = self
        hq = get_huey()
        done = 0
        idle_since = time.monotonic()
        log.info("worker %s started (queue: %s)", self.id, type(hq.storage).__name__)
        store.beat(self.id, None)
        try:
            while not self.stopping.is_set():
                try:
                    self._housekeeping()
                except Exception:  # e.g. a locked database: the next round retries
                    log.warning("worker housekeeping failed", exc_info=True)
                task = hq.dequeue()
                if task is None:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    self.stopping.wait(self.settings.worker_poll_s)
                    continue
                hq.execute(task)  # -> _run_job_task -> self.run_job(job_id)
                done += 1
                idle_since = time.monotonic()
                if max_jobs is not None and done >= max_jobs:
                    break
        finally:
            store.forget_worker(self.id)
            _CURRENT = None
            log.info("worker %s stopped", self.id)
        return done

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < max(1.0, self.settings.worker_poll_s * 2):
            return
        self._last_sweep = now
        store.beat(self.id, self.current_job)
        for job_id in store.reclaim_stale():
            enqueue_job(job_id)
        # A job row queued with no message (the API process died between the insert
        # and the enqueue, or the queue was wiped) is enqueued again; a duplicate
        # message is harmless because only one claim can win.
        pending = {t.args[0] for t in get_huey().pending() if t.args}
        for job_id in store.queued_job_ids(older_than_s=self.settings.job_lease_s):
            if job_id not in pending:
                log.warning("job %s was queued without a message; enqueuing it", job_id)
                enqueue_job(job_id)
                store.touch(job_id)

    def install_signal_handlers(self) -> None:
        def _graceful(signum: int, _frame: Any) -> None:
            log.info("signal %d: finishing after a checkpoint", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, _graceful)
        signal.signal(signal.SIGINT, _graceful)

    # -- one job -------------------------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        s = self.settings
        if not store.claim(job_id, self.id, s.job_lease_s):
            log.info("job %s: not claimable (done, cancelled or running elsewhere)", job_id)
            return
        job = store.get_job(job_id)
        log.info("job %s (%s): claimed, attempt %d", job_id, job["kind"], job["attempts"])
        self.current_job = job_id
        store.beat(self.id, job_id)
        try:
            with _Lease(job_id, self.id, s.job_lease_s) as lease:
                ctx = JobContext(job, self, lease)
                state, result, error = self._execute(ctx)
        finally:
            self.current_job = None
        if state == "requeue":
            if store.release(job_id, self.id):
                enqueue_job(job_id)
            return
        if state is None:  # lease lost: someone else owns it now
            return
        if not store.finish(job_id, self.id, state, result=result, error=error):
            log.error("job %s: lease lost before it could finish", job_id)
            return
        log.info("job %s: %s", job_id, state)
        final = store.get_job(job_id)
        if final.get("webhook"):
            store.set_webhook_status(job_id, post_webhook(final["webhook"], final))

    def _execute(self, ctx: JobContext) -> tuple[str | None, dict | None, dict | None]:
        try:
            result = run_kind(ctx)
            ctx.flush()
            return "succeeded", result, None
        except JobCancelled:
            ctx.flush()
            if ctx.lease.lost.is_set():
                return None, None, None
            if self.stopping.is_set() and not ctx.lease.cancelled.is_set():
                return "requeue", None, None
            return "cancelled", None, {"code": "cancelled", "message": "cancelled by request"}
        except JobInterrupted:
            return "requeue", None, None
        except PolychromeError as e:
            ctx.flush()
            return "failed", None, {"code": e.code, "message": str(e)}
        except Exception as e:  # a bug: record it, keep the worker alive
            log.exception("job %s crashed", ctx.job["id"])
            return "failed", None, {"code": "internal_error",
                                    "message": f"{type(e).__name__}: {e}"}


def tie_to_supervisor(poll_s: float = 0.5) -> None:
    """A worker started by `polychrome serve` stops when its supervisor dies (killed with
    -9 too), instead of running on beside the next `serve` on the same home.

    Linux delivers SIGTERM at the parent's death (prctl PR_SET_PDEATHSIG): the usual
    graceful stop (checkpoint, job back to the queue). A thread also polls the parent pid
    (other systems, or a signal lost to a race) and sends the same SIGTERM; a worker still
    alive ORPHAN_GRACE_S later exits hard. Does nothing outside a supervisor.
    """
    expected = int(os.environ.get(SUPERVISOR_PID_ENV) or 0)
    if not expected:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.warning("could not tie this worker to its supervisor's life (errno %d)",
                        ctypes.get_errno())

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(poll_s)
        log.warning("the supervisor (pid %d) is gone: stopping this worker", expected)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_S)
        log.error("still running %g s after the supervisor died: exiting now", ORPHAN_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def eta(started: float, step: int, total: int, first_step: int = 0) -> float | None:
    """Seconds left from the rate since this attempt started (resumed steps excluded)."""
    done = step - first_step
    if done <= 0 or total <= 0:
        return None
    rate = (time.monotonic() - started) / done
    left = max(0, total - step) * rate
    return left if math.isfinite(left) else None
