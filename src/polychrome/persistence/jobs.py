"""Job rows: create, read, cancel, and the lease protocol workers use to run them.

A worker may run a job only while it holds the lease: it gets it with one atomic
UPDATE (`claim`) that succeeds only if the job is queued or its previous lease
expired, and keeps it with heartbeats. A killed worker stops renewing; once the
lease expires (or, on the same host, as soon as its pid is gone) any worker
returns the job to the queue (`reclaim_stale`). So no job is lost and no job
runs in two places at once.

A lost worker counts against its job (`failures`, which the give-up limit reads) only
when the rest of the service stayed up: the supervisor that started the worker saw it
die (`worker_died`), or another worker that was already running before the death is
still running. When the whole service went down (the supervisor and its workers killed,
the machine rebooted), nobody outlived the worker, so the job is simply resumed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ..errors import JobStateError, NotFound, QueueFull
from .db import Base, session_scope, utcnow

log = logging.getLogger(__name__)


# -- tables ----------------------------------------------------------------------------
class Job(Base):
    """A background job (import / train / eval): the single source of truth for its state.

    The queue (huey) only carries the job id; workers claim a job here with an
    atomic UPDATE and keep a lease alive with heartbeats (serving/jobs/).
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    kind: Mapped[str] = mapped_column(String(16), index=True)  # import | train | eval
    # queued | running | succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)  # last logged values
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"code", "message"}
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    run_dir: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)  # unix time
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    # Worker deaths the job is blamed for (the service outlived them; see reclaim_stale).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    webhook: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(256), nullable=True)


class WorkerBeat(Base):
    """A job worker process and when it was last alive (for /api/ready and reclaiming)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:nonce
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[float] = mapped_column(Float)  # unix time
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
KINDS = ("import", "train", "eval")
MAX_FAILURES = 5  # worker deaths blamed on one job before it fails for good


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "params": job.params or {},
        "created": job.created.isoformat() + "Z" if job.created else None,
        "started": job.started.isoformat() + "Z" if job.started else None,
        "finished": job.finished.isoformat() + "Z" if job.finished else None,
        "progress": float(job.progress or 0.0),
        "step": int(job.step or 0),
        "total": int(job.total or 0),
        "eta_seconds": job.eta_seconds,
        "metrics": job.metrics or {},
        "error": job.error,
        "result": job.result,
        "run_dir": job.run_dir,
        "cancel_requested": bool(job.cancel_requested),
        "attempts": int(job.attempts or 0),
        "failures": int(job.failures or 0),
        "webhook": job.webhook,
        "webhook_status": job.webhook_status,
    }


# -- API side ------------------------------------------------------------------------
def create_job(kind: str, params: dict[str, Any], *, queue_max: int, webhook: str | None = None,
               run_dir: str | None = None, job_id: str | None = None) -> dict[str, Any]:
    """Insert a queued job (refusing beyond `queue_max` queued jobs) and return it."""
    with session_scope() as s:
        queued = s.scalar(select(func.count()).select_from(Job).where(Job.state == "queued"))
        if queued >= queue_max:
            raise QueueFull(f"the job queue is full ({queued} queued, limit {queue_max}); "
                            "try again later")
        job = Job(id=job_id or uuid.uuid4().hex, kind=kind, state="queued", params=params,
                  webhook=webhook, run_dir=run_dir, metrics={})
        s.add(job)
        s.flush()
        return job_to_dict(job)


def get_job(job_id: str) -> dict[str, Any]:
    with session_scope() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job_to_dict(job)


def list_jobs(*, state: str | None = None, kind: str | None = None, limit: int = 50,
              offset: int = 0) -> list[dict[str, Any]]:
    with session_scope() as s:
        q = select(Job).order_by(Job.created.desc(), Job.id.desc())
        if state:
            q = q.where(Job.state == state)
        if kind:
            q = q.where(Job.kind == kind)
        return [job_to_dict(j) for j in s.scalars(q.limit(limit).offset(offset))]


def count_by_state() -> dict[str, int]:
    with session_scope() as s:
        rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    counts = dict.fromkeys(STATES, 0)
    counts.update({state: n for state, n in rows})
    return counts


def request_cancel(job_id: str) -> dict[str, Any]:
    """Cancel a queued job at once; ask a running one to stop (its worker checkpoints)."""
    now = utcnow()
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.state == "queued").values(
            state="cancelled", finished=now, updated=now, cancel_requested=1,
            error={"code": "cancelled", "message": "cancelled before it started"}))
        if res.rowcount == 0:
            res = s.execute(update(Job).where(Job.id == job_id, Job.state == "running")
                            .values(cancel_requested=1, updated=now))
        if res.rowcount == 0:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            raise JobStateError(f"job {job_id} is already {job.state}")
    return get_job(job_id)


def retry_job(job_id: str, *, queue_max: int) -> dict[str, Any]:
    """Queue a failed or cancelled training job again. Its run directory is kept, so the
    next attempt resumes from the run's latest checkpoint (or starts it, if it never got
    one). The blame count starts over: the person retrying has decided to try again."""
    now = utcnow()
    with session_scope() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.kind != "train":
            raise JobStateError(f"job {job_id} is an {job.kind} job: only training jobs can "
                                "be retried (submit it again)")
        if job.state not in ("failed", "cancelled"):
            raise JobStateError(f"job {job_id} is {job.state}: only a failed or cancelled "
                                "job can be retried")
        queued = s.scalar(select(func.count()).select_from(Job).where(Job.state == "queued"))
        if queued >= queue_max:
            raise QueueFull(f"the job queue is full ({queued} queued, limit {queue_max}); "
                            "try again later")
        res = s.execute(update(Job).where(Job.id == job_id,
                                          Job.state.in_(("failed", "cancelled")))
                        .values(state="queued", finished=None, error=None, result=None,
                                cancel_requested=0, failures=0, lease_owner=None,
                                lease_expires=None, eta_seconds=None, webhook_status=None,
                                updated=now))
        if res.rowcount == 0:  # retried by someone else a moment ago
            raise JobStateError(f"job {job_id} is no longer failed or cancelled")
    return get_job(job_id)


# -- worker side ---------------------------------------------------------------------
def claim(job_id: str, owner: str, lease_s: float) -> bool:
    """Atomically take the job if it is queued or its lease has expired."""
    now = time.time()
    with session_scope() as s:
        res = s.execute(
            update(Job)
            .where(Job.id == job_id)
            .where((Job.state == "queued")
                   | ((Job.state == "running") & (Job.lease_expires < now)))
            .values(state="running", lease_owner=owner, lease_expires=now + lease_s,
                    attempts=Job.attempts + 1, started=func.coalesce(Job.started, utcnow()),
                    updated=utcnow())
        )
        return res.rowcount == 1


def renew(job_id: str, owner: str, lease_s: float) -> tuple[bool, bool]:
    """Extend the lease; returns (still ours, cancel requested)."""
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                                          Job.state == "running")
                        .values(lease_expires=time.time() + lease_s))
        if res.rowcount == 0:
            return False, False
        cancel = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return True, bool(cancel)


def save_progress(job_id: str, owner: str, **values: Any) -> bool:
    """Write progress fields (step, total, progress, eta_seconds, metrics, run_dir)."""
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                        .values(updated=utcnow(), **values))
        return res.rowcount == 1


def finish(job_id: str, owner: str, state: str, *, result: dict | None = None,
           error: dict | None = None) -> bool:
    assert state in FINAL_STATES
    values: dict[str, Any] = {"state": state, "finished": utcnow(), "updated": utcnow(),
                              "lease_owner": None, "lease_expires": None,
                              "result": result, "error": error}
    if state == "succeeded":
        values["progress"] = 1.0
        values["eta_seconds"] = 0.0
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                        .values(**values))
        return res.rowcount == 1


def release(job_id: str, owner: str) -> bool:
    """Give a job back to the queue (graceful shutdown mid-job): it will resume."""
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                                          Job.state == "running")
                        .values(state="queued", lease_owner=None, lease_expires=None,
                                updated=utcnow()))
        return res.rowcount == 1


def set_webhook_status(job_id: str, status: str) -> None:
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(webhook_status=status[:256]))


def _owner_dead_here(owner: str | None) -> bool:
    """True only when the owner ran on this host and its process is gone (fast reclaim)."""
    if not owner:
        return True
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _alive_here(pid: int, started: float) -> bool:
    """Process `pid` of this host exists and is the one that started at `started` (not a
    later process that reuses the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    began = _process_start(pid)
    return began is None or began <= started + 5.0


def _process_start(pid: int) -> float | None:
    """When process `pid` started (unix time; Linux /proc), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time since boot
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _unix(t: dt.datetime) -> float:
    return t.replace(tzinfo=dt.UTC).timestamp()


def _outlived(owner: str | None, expires: float | None, lease_s: float) -> bool:
    """Did another worker that was running before `owner` died keep running after?

    Evidence that the service stayed up while the job's worker died: a worker (other than
    the owner) started before the owner's last sign of life and alive after it died -- on
    this host its process still exists (the same process, not a later one with its pid);
    on another host it beat after the owner's lease ran out. Workers of a service that
    went down with the owner are dead too, and the ones started since are younger than the
    death, so that job is not blamed.
    """
    host = socket.gethostname()
    with session_scope() as s:
        rows = s.execute(select(WorkerBeat.id, WorkerBeat.host, WorkerBeat.pid,
                                WorkerBeat.started, WorkerBeat.last_seen)).all()
    last_sign = next((seen for wid, _, _, _, seen in rows if wid == owner), None)
    if last_sign is None:
        if expires is None:
            return False
        last_sign = expires - lease_s
    for wid, whost, pid, started, seen in rows:
        if wid == owner or started is None or _unix(started) >= last_sign:
            continue
        if whost == host:
            if pid == os.getpid() or _alive_here(pid, _unix(started)):
                return True
        elif expires is not None and seen > expires:
            return True
    return False


def _lose(job_id: str, owner: str | None, failures: int, *, blamed: bool,
          max_failures: int, why: str) -> str | None:
    """Take a running job from its lost worker: back to the queue, or failed when the job is
    blamed for the `max_failures`th time. Returns the new state (None: someone else took it)."""
    failures += 1 if blamed else 0
    values: dict[str, Any] = {"lease_owner": None, "lease_expires": None, "updated": utcnow(),
                              "failures": failures}
    gave_up = blamed and failures >= max_failures
    if gave_up:
        values.update(state="failed", finished=utcnow(), error={
            "code": "worker_lost",
            "message": f"the worker running this job died {failures} times while the rest "
                       "of the service stayed up (the job itself seems to kill it, e.g. by "
                       "running out of memory); giving up"})
    else:
        values["state"] = "queued"
    cond = (Job.lease_owner == owner) if owner is not None else Job.lease_owner.is_(None)
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.state == "running", cond)
                        .values(**values))
    if res.rowcount != 1:
        return None
    if gave_up:
        log.error("job %s: its worker died %d times; marked failed", job_id, failures)
    else:
        log.warning("job %s: worker %s is gone (%s); returning the job to the queue%s",
                    job_id, owner, why, f" (failure {failures})" if blamed else "")
    return values["state"]


def reclaim_stale(now: float | None = None, max_failures: int = MAX_FAILURES,
                  lease_s: float | None = None) -> list[str]:
    """Return running jobs whose worker is gone to the queue; returns their ids.

    The caller enqueues the returned ids. The conditional UPDATE makes the
    reclaim happen once even when several workers sweep at the same moment. The
    job is blamed for the death (`failures`) only when another worker outlived it
    (`_outlived`); a job blamed `max_failures` times (say it kills every worker
    that runs it) fails instead of circling forever.
    """
    now = time.time() if now is None else now
    if lease_s is None:
        from ..settings import get_settings

        lease_s = get_settings().job_lease_s
    reclaimed: list[str] = []
    with session_scope() as s:
        rows = s.execute(select(Job.id, Job.lease_owner, Job.lease_expires, Job.failures)
                         .where(Job.state == "running")).all()
    for job_id, owner, expires, failures in rows:
        expired = expires is not None and expires < now
        if not (expired or _owner_dead_here(owner)):
            continue
        blamed = _outlived(owner, expires, lease_s)
        state = _lose(job_id, owner, failures or 0, blamed=blamed, max_failures=max_failures,
                      why="lease expired" if expired else "its process ended")
        if state == "queued":
            reclaimed.append(job_id)
    return reclaimed


def worker_died(pid: int, *, host: str | None = None,
                max_failures: int = MAX_FAILURES) -> list[str]:
    """The supervisor that started worker `pid` saw it die and is itself alive: the jobs that
    worker held are blamed for it and go back to the queue (or fail at the limit). Returns
    the ids to enqueue."""
    prefix = f"{host or socket.gethostname()}:{int(pid)}:"
    with session_scope() as s:
        rows = s.execute(select(Job.id, Job.lease_owner, Job.failures)
                         .where(Job.state == "running",
                                Job.lease_owner.startswith(prefix, autoescape=True))).all()
    requeued = []
    for job_id, owner, failures in rows:
        if _lose(job_id, owner, failures or 0, blamed=True, max_failures=max_failures,
                 why="its supervisor saw it die") == "queued":
            requeued.append(job_id)
    return requeued


def queued_job_ids(older_than_s: float = 0.0) -> list[str]:
    """Queued jobs, oldest first, untouched for at least `older_than_s` seconds."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
    with session_scope() as s:
        return list(s.scalars(select(Job.id).where(Job.state == "queued", Job.updated <= cutoff)
                              .order_by(Job.created)))


def touch(job_id: str) -> None:
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(updated=utcnow()))


# -- worker registry (for readiness) ----------------------------------------------------
def beat(worker_id: str, job_id: str | None) -> None:
    host, pid = worker_id.split(":")[0], int(worker_id.split(":")[1])
    with session_scope() as s:
        row = s.get(WorkerBeat, worker_id)
        if row is None:
            s.add(WorkerBeat(id=worker_id, host=host, pid=pid, last_seen=time.time(),
                             job_id=job_id))
        else:
            row.last_seen = time.time()
            row.job_id = job_id


def forget_worker(worker_id: str) -> None:
    with session_scope() as s:
        row = s.get(WorkerBeat, worker_id)
        if row is not None:
            s.delete(row)


def live_workers(max_age_s: float) -> list[dict[str, Any]]:
    cutoff = time.time() - max_age_s
    with session_scope() as s:
        rows = s.scalars(select(WorkerBeat).where(WorkerBeat.last_seen >= cutoff)).all()
        return [{"id": r.id, "host": r.host, "pid": r.pid, "job_id": r.job_id,
                 "last_seen": r.last_seen} for r in rows]
