"""Crashes of the service are not the job's fault.

A job's `failures` (which the give-up limit reads) grow only when its worker died while
the rest of the service stayed up: the supervisor saw its worker die, or another worker
that was running before the death still runs. When everything went down together the job
is resumed without blame, however often that happens. `serve` killed with -9 takes its
worker with it, and one home runs one supervisor's workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from polychrome.persistence import jobs as store
from polychrome.persistence.db import session_scope

from .live import start_server, wait_for, wait_job

HOST = socket.gethostname()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # certainly gone


def _worker(pid: int, tag: str) -> str:
    """A worker row (as a worker's first beat makes it) for a process of this host."""
    wid = f"{HOST}:{pid}:{tag}"
    store.beat(wid, None)
    time.sleep(0.01)  # later rows start later
    return wid


# -- the rule, on the store (SQLite and PostgreSQL) ---------------------------------------------
@pytest.mark.database
def test_a_job_whose_whole_service_went_down_is_never_blamed():
    """Ten times over (twice the give-up limit): the worker and the rest of its service
    are dead; the next worker resumes the job without counting a failure."""
    job = store.create_job("train", {}, queue_max=10)
    for i in range(2 * store.MAX_FAILURES):
        _worker(_dead_pid(), f"sibling{i}")  # the other worker of that service: dead too
        owner = _worker(_dead_pid(), f"w{i}")
        assert store.claim(job["id"], owner, lease_s=3600)
        store.beat(owner, job["id"])
        assert store.reclaim_stale() == [job["id"]]
        back = store.get_job(job["id"])
        assert back["state"] == "queued" and back["failures"] == 0, back
    assert store.get_job(job["id"])["attempts"] == 2 * store.MAX_FAILURES


@pytest.mark.database
def test_a_worker_that_dies_while_an_older_worker_lives_on_is_blamed_on_the_job():
    """This test process is a live worker that started before each death: the job is
    blamed every time, and fails at the limit with a message that says why."""
    _worker(os.getpid(), "survivor")
    job = store.create_job("train", {}, queue_max=10)
    for i in range(1, store.MAX_FAILURES + 1):
        owner = _worker(_dead_pid(), f"w{i}")
        assert store.claim(job["id"], owner, lease_s=3600)
        store.beat(owner, job["id"])
        reclaimed = store.reclaim_stale()
        back = store.get_job(job["id"])
        assert back["failures"] == i, back
        if i < store.MAX_FAILURES:
            assert reclaimed == [job["id"]] and back["state"] == "queued"
    assert reclaimed == [] and back["state"] == "failed"
    assert back["error"]["code"] == "worker_lost"
    assert f"died {store.MAX_FAILURES} times" in back["error"]["message"]
    assert "stayed up" in back["error"]["message"]


@pytest.mark.database
def test_a_younger_worker_or_a_reused_pid_is_no_witness():
    """Workers started after the death (the restarted service) and a row whose pid now
    belongs to a later process say nothing about it."""
    if store._process_start(os.getppid()) is None:
        pytest.skip("no process start times here (/proc)")
    job = store.create_job("train", {}, queue_max=10)
    owner = _worker(_dead_pid(), "w")
    assert store.claim(job["id"], owner, lease_s=3600)
    store.beat(owner, job["id"])
    _worker(os.getpid(), "younger")  # started after the owner's last beat
    # A worker row from long ago whose pid a later process (our parent) has now.
    with session_scope() as s:
        s.add(store.WorkerBeat(id=f"{HOST}:{os.getppid()}:old", host=HOST, pid=os.getppid(),
                               started=store.utcnow().replace(year=2000), last_seen=time.time(),
                               job_id=None))
    assert store.reclaim_stale() == [job["id"]]
    assert store.get_job(job["id"])["failures"] == 0


@pytest.mark.database
def test_across_machines_a_worker_that_beat_after_the_lease_ran_out_is_a_witness():
    job = store.create_job("train", {}, queue_max=10)
    store.beat("far-a:10:w", None)  # another machine's worker, running before
    store.beat("far-b:11:x", None)  # one more, which goes quiet before the lease runs out
    time.sleep(0.01)
    assert store.claim(job["id"], "far-c:12:owner", lease_s=1)
    with session_scope() as s:
        s.execute(update(store.WorkerBeat).where(store.WorkerBeat.id == "far-b:11:x")
                  .values(last_seen=time.time() - 5))
    assert store.reclaim_stale(now=time.time() + 10, lease_s=1) == [job["id"]]
    assert store.get_job(job["id"])["failures"] == 0  # nobody is known to have lived on
    assert store.claim(job["id"], "far-c:13:owner", lease_s=1)
    with session_scope() as s:
        s.execute(update(store.WorkerBeat).where(store.WorkerBeat.id == "far-a:10:w")
                  .values(last_seen=time.time() + 5))  # beat after that lease ran out
    assert store.reclaim_stale(now=time.time() + 10, lease_s=1) == [job["id"]]
    assert store.get_job(job["id"])["failures"] == 1


@pytest.mark.database
def test_the_supervisor_blames_the_jobs_of_a_worker_it_saw_die():
    mine = store.create_job("train", {}, queue_max=10)
    other = store.create_job("train", {}, queue_max=10)
    assert store.claim(mine["id"], f"{HOST}:1:a", lease_s=3600)
    assert store.claim(other["id"], f"{HOST}:12:b", lease_s=3600)  # pid 12 is not pid 1
    assert store.worker_died(1) == [mine["id"]]
    assert store.get_job(mine["id"])["failures"] == 1
    assert store.get_job(mine["id"])["state"] == "queued"
    assert store.get_job(other["id"])["state"] == "running"
    assert store.get_job(other["id"])["failures"] == 0
    for i in range(2, store.MAX_FAILURES + 1):
        assert store.claim(mine["id"], f"{HOST}:1:a{i}", lease_s=3600)
        requeued = store.worker_died(1)
    assert requeued == []
    failed = store.get_job(mine["id"])
    assert failed["state"] == "failed" and failed["failures"] == store.MAX_FAILURES


def test_the_job_json_carries_failures(polychrome_home):
    from fastapi.testclient import TestClient

    from polychrome.serving.app import create_app

    job = store.create_job("train", {}, queue_max=10)
    with TestClient(create_app()) as c:
        shown = c.get(f"/api/jobs/{job['id']}").json()
        assert shown["failures"] == 0 and shown["attempts"] == 0
        assert "failures" in c.get("/openapi.json").json()["components"]["schemas"]["JobOut"][
            "properties"]


# -- real processes ---------------------------------------------------------------------------
def _dataset(home: Path) -> None:
    """A tiny picture set in the store of `home`, before a server starts there."""
    from polychrome.data.synthetic import make_shapes_dataset
    from polychrome.persistence.datasets import import_dataset

    old = os.environ.get("POLYCHROME_HOME")
    os.environ["POLYCHROME_HOME"] = str(home)
    try:
        import_dataset(make_shapes_dataset(home.parent / "shapes", n=8, size=32), "shapes")
    finally:
        os.environ["POLYCHROME_HOME"] = old or ""
        if old is None:
            del os.environ["POLYCHROME_HOME"]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie nobody reaped yet is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _live_workers(c) -> list[dict]:
    return c.get("/api/workers").json()["items"]


def _worker_of(server) -> int:
    """The pid of the one job worker `server` started (once it is up)."""
    return wait_for(lambda: next(iter(_children(server.proc.pid)), None), 60,
                    what="the server's worker process")


def _train(steps: int, **config) -> dict:
    return {"kind": "train", "model": "dcgan", "dataset": "shapes", "steps": steps, "seed": 3,
            "resolution": 16, "batch_size": 8, "name": "tough",
            "config": {"model_config": {"width": 8, "z_dim": 16}, "log_every": 1,
                       "sample_every": 0, "checkpoint_every": 1, **config}}


@pytest.mark.slow
def test_a_killed_serve_takes_its_worker_along_and_one_home_runs_one_set_of_workers(
        tmp_path):
    home = tmp_path / "home"
    first = start_server(home, workers=1)
    second = None
    try:
        worker = _worker_of(first)
        with first.client() as c:
            wait_for(lambda: _live_workers(c), 60, what="the worker's first beat")
        # A second `serve` on the same home serves the API but starts no second worker.
        second = start_server(home, workers=1)
        with second.client() as c:
            assert c.get("/api/health").status_code == 200
            wait_for(lambda: "runs the job workers of" in second.log(), 30,
                     what="the second server saying it starts no workers")
            time.sleep(2.0)
            assert _children(second.proc.pid) == []
            assert [w["pid"] for w in _live_workers(c)] == [worker]
        # kill -9 of the first `serve`: its worker stops within seconds ...
        _kill9(first.proc.pid)
        first.proc.wait()
        wait_for(lambda: _gone(worker), 15, interval=0.1, what="the orphaned worker to exit")
        # ... and the second one takes the home's workers over.
        taken = _worker_of(second)
        assert taken != worker
        wait_for(lambda: "the other supervisor is gone" in second.log(), 30,
                 what="the takeover in the log")
    finally:
        for s in (first, second):
            if s is not None:
                s.stop()
    assert _children(second.proc.pid) == [] and _gone(taken)


@pytest.mark.slow
def test_a_worker_killed_under_a_live_supervisor_counts_one_failure(tmp_path):
    home = tmp_path / "home"
    _dataset(home)
    server = start_server(home, workers=1)
    try:
        with server.client() as c:
            job = c.post("/api/jobs", json=_train(400)).json()
            assert job["failures"] == 0
            wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["step"] >= 3, 120,
                     what="training to start")
            victim = _worker_of(server)
            _kill9(victim)  # the job's own doing, as far as anyone can tell (an OOM kill)
            again = wait_for(lambda: (j := c.get(f"/api/jobs/{job['id']}").json())["attempts"]
                             >= 2 and j, 60, what="the job to be taken up again")
            assert again["failures"] == 1, again
            assert "saw it die" in server.log()
            done = wait_job(c, job["id"], timeout=300)
        assert done["state"] == "succeeded" and done["failures"] == 1, done
        assert done["result"]["resumed"] is True
    finally:
        server.stop()


def _row_step(home: Path, job_id: str) -> int:
    """The job's step as the database holds it (read directly: no server is up)."""
    import sqlite3

    con = sqlite3.connect(home / "db.sqlite")
    try:
        return con.execute("SELECT step FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    finally:
        con.close()


@pytest.mark.slow
def test_ten_kill_9s_of_the_whole_service_during_one_training_job(tmp_path):
    """`serve` and its worker killed with -9 ten times while one job trains (a checkpoint
    every step): every restart resumes it, nobody blames it, and it finishes with each step
    trained exactly once."""
    home = tmp_path / "home"
    _dataset(home)
    steps = 400
    server = start_server(home, workers=1)
    try:
        with server.client() as c:
            job = c.post("/api/jobs", json=_train(steps)).json()
        run_dir = server.stored(job["run_dir"])
        floor = 0  # the step the killed attempt left in the row: the next must pass it
        for kill in range(1, 11):
            with server.client() as c:
                def progressed(c=c, kill=kill, floor=floor):
                    j = c.get(f"/api/jobs/{job['id']}").json()
                    assert j["state"] in ("queued", "running"), f"ended before kill {kill}: {j}"
                    return j if (j["state"] == "running" and j["attempts"] >= kill
                                 and j["step"] > floor) else None

                seen = wait_for(progressed, 180, interval=0.1,
                                what=f"this attempt's progress before kill {kill}")
            assert seen["failures"] == 0, seen
            worker = _worker_of(server)
            _kill9(server.proc.pid)  # the whole service: supervisor first, then its worker
            _kill9(worker)
            server.proc.wait()
            wait_for(lambda w=worker: _gone(w), 15, what="the worker to die")
            floor = _row_step(home, job["id"])
            server = start_server(home, workers=1)
        with server.client() as c:
            done = wait_job(c, job["id"], timeout=600)
        assert done["state"] == "succeeded", done
        assert done["failures"] == 0 and done["attempts"] >= 11, done
        assert done["result"]["steps"] == steps and done["result"]["resumed"] is True
        lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if ln.strip()]
        assert [ln["step"] for ln in lines if "losses" in ln] == list(range(1, steps + 1))
    finally:
        server.stop()


# -- retry: a failed or cancelled training job resumes ------------------------------------------
def test_retry_queues_a_failed_or_cancelled_training_job_again(polychrome_home, monkeypatch):
    from fastapi.testclient import TestClient

    from polychrome.serving.app import create_app
    from polychrome.serving.jobs.queue import get_huey

    def job(kind: str, state: str) -> str:
        j = store.create_job(kind, {}, queue_max=100, run_dir=f"runs/{kind}-{state}")
        if state != "queued":
            assert store.claim(j["id"], f"{HOST}:1:x", lease_s=3600)
        if state in store.FINAL_STATES:
            assert store.finish(j["id"], f"{HOST}:1:x", state,
                                error=None if state == "succeeded" else
                                {"code": "worker_lost", "message": "gone"})
        return j["id"]

    monkeypatch.setenv("POLYCHROME_QUEUE_MAX", "2")  # one queued job below, one retried
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        r = c.post("/api/jobs/nope/retry")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        for kind, state in [("train", "queued"), ("train", "running"), ("train", "succeeded"),
                            ("import", "failed"), ("eval", "cancelled")]:
            r = c.post(f"/api/jobs/{job(kind, state)}/retry")
            assert r.status_code == 409, (kind, state, r.text)
            assert r.json()["error"]["code"] == "job_state", r.text
        failed = job("train", "failed")
        with session_scope() as s:  # it had been blamed: retrying starts the count over
            s.execute(update(store.Job).where(store.Job.id == failed).values(failures=5))
        get_huey().storage.flush_queue()
        r = c.post(f"/api/jobs/{failed}/retry")
        assert r.status_code == 202, r.text
        again = r.json()
        assert r.headers["location"] == f"/api/jobs/{failed}"
        assert again["state"] == "queued" and again["error"] is None
        assert again["failures"] == 0 and again["finished"] is None
        assert again["run_dir"] == "runs/train-failed"  # the same run: it resumes
        assert [t.args for t in get_huey().pending()] == [(failed,)]
        assert c.post(f"/api/jobs/{failed}/retry").status_code == 409  # queued now
        r = c.post(f"/api/jobs/{job('train', 'cancelled')}/retry")
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full", r.text
