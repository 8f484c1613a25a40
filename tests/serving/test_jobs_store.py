"""The job queue and the lease protocol, on real SQLite and a real huey queue."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from huey.registry import Message

from polychrome.errors import NotFound
from polychrome.persistence import jobs as store
from polychrome.serving.errors import JobStateError, QueueFull
from polychrome.serving.jobs.queue import JSONSerializer, enqueue_job, get_huey

pytestmark = pytest.mark.database  # on SQLite and on PostgreSQL


def test_json_serializer_round_trips_huey_messages_without_pickle():
    ser = JSONSerializer()
    eta = dt.datetime(2030, 1, 2, 3, 4, 5)
    inner = Message("id2", "x.y", None, 0, 0, None, ("b",), {}, None, None, None, None)
    msg = Message("id1", "polychrome.run_job", eta, 2, 5, 1, ("job-1",), {"k": [1, "v"]},
                  inner, None, None, eta, None, None, None)
    raw = ser.serialize(msg)
    json.loads(raw)  # plain JSON on the queue
    back = ser.deserialize(raw)
    assert back == msg and isinstance(back.on_complete, Message) and back.eta == eta
    with pytest.raises(TypeError):
        ser.serialize(Message("i", "n", None, 0, 0, None, (object(),), {}, None, None))


def test_queue_carries_only_job_ids():
    enqueue_job("abc")
    hq = get_huey()
    assert hq.pending_count() == 1
    task = hq.dequeue()
    assert task.args == ("abc",) and task.kwargs == {}


def test_claim_is_exclusive_and_lease_expiry_reclaims():
    job = store.create_job("import", {"name": "x"}, queue_max=10)
    assert store.claim(job["id"], "host:1:a", lease_s=30)
    assert not store.claim(job["id"], "host:2:b", lease_s=30)  # running elsewhere
    assert store.renew(job["id"], "host:1:a", 30) == (True, False)
    assert store.renew(job["id"], "host:2:b", 30) == (False, False)
    assert store.reclaim_stale() == []  # lease still valid (other host: no pid check)
    assert store.reclaim_stale(now=time.time() + 60) == [job["id"]]
    assert store.get_job(job["id"])["state"] == "queued"
    # The old owner lost it: its progress and its finish are refused.
    assert not store.save_progress(job["id"], "host:1:a", step=3)
    assert store.claim(job["id"], "host:2:b", lease_s=30)
    assert not store.finish(job["id"], "host:1:a", "succeeded")
    assert store.finish(job["id"], "host:2:b", "succeeded", result={"ok": 1})
    done = store.get_job(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2 and done["progress"] == 1.0
    assert not store.claim(job["id"], "host:3:c", lease_s=30)  # finished jobs never rerun


def test_dead_local_owner_is_reclaimed_without_waiting(tmp_path):
    import socket
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that is certainly gone
    job = store.create_job("import", {}, queue_max=10)
    owner = f"{socket.gethostname()}:{p.pid}:dead"
    assert store.claim(job["id"], owner, lease_s=3600)
    assert store.reclaim_stale() == [job["id"]]


def test_cancel_and_queue_bound():
    a = store.create_job("import", {}, queue_max=2)
    store.create_job("import", {}, queue_max=2)
    with pytest.raises(QueueFull):
        store.create_job("import", {}, queue_max=2)
    assert store.request_cancel(a["id"])["state"] == "cancelled"
    assert not store.claim(a["id"], "h:1:x", 30)
    with pytest.raises(JobStateError):
        store.request_cancel(a["id"])
    with pytest.raises(NotFound):
        store.request_cancel("nope")
    c = store.create_job("import", {}, queue_max=2)  # a slot was freed
    assert store.claim(c["id"], "h:1:x", 30)
    running = store.request_cancel(c["id"])
    assert running["state"] == "running" and running["cancel_requested"]
    assert store.renew(c["id"], "h:1:x", 30) == (True, True)
    assert store.count_by_state()["cancelled"] == 1


def test_a_job_that_keeps_losing_its_worker_fails_eventually():
    import os
    import socket

    # This process, a worker running all along, outlives every lost one: the job is blamed.
    store.beat(f"{socket.gethostname()}:{os.getpid()}:w", None)
    time.sleep(0.01)
    job = store.create_job("train", {}, queue_max=10)
    for attempt in range(1, 4):
        assert store.claim(job["id"], f"host:{attempt}:x", lease_s=1)
        reclaimed = store.reclaim_stale(now=time.time() + 10, max_failures=3, lease_s=1)
        assert reclaimed == ([job["id"]] if attempt < 3 else [])
    failed = store.get_job(job["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "worker_lost"


def _claim_all(url: str, home: str, ids: list[str], owner: str, start, q) -> None:
    import os

    os.environ["POLYCHROME_HOME"] = home
    if url:
        os.environ["POLYCHROME_DATABASE_URL"] = url
    from polychrome.persistence import jobs as pstore

    pstore.count_by_state()  # connect before the race starts
    start.wait(60)
    q.put((owner, [j for j in ids if pstore.claim(j, owner, lease_s=60)]))


def test_processes_racing_for_the_same_jobs_claim_each_exactly_once(polychrome_home):
    """Several worker processes (as on several machines) claim from one database at the
    same moment: every job is won by exactly one of them."""
    import multiprocessing as mp
    import os

    ids = [store.create_job("import", {"name": f"d{i}"}, queue_max=100)["id"]
           for i in range(24)]
    ctx = mp.get_context("spawn")
    start, q = ctx.Event(), ctx.Queue()
    url = os.environ.get("POLYCHROME_DATABASE_URL", "")
    procs = [ctx.Process(target=_claim_all, args=(url, str(polychrome_home), ids,
                                                  f"host{i}:{100 + i}:w", start, q))
             for i in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    won = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    claimed = [j for js in won.values() for j in js]
    assert sorted(claimed) == sorted(ids)  # each exactly once, none lost
    for owner, js in won.items():
        for j in js:
            job = store.get_job(j)
            assert job["state"] == "running" and job["attempts"] == 1
            assert store.renew(j, owner, 30) == (True, False)
