"""The job queue on Redis (huey's Redis backend, the `scale` extra): what several machines share."""

from __future__ import annotations

import shutil
import socket

import pytest

from conftest import load_local_cluster, need_service
from polychrome.persistence import jobs as store
from polychrome.serving.jobs.queue import enqueue_job, get_huey
from polychrome.serving.jobs.worker import Worker
from serving.test_worker import InProcessClient, _inbox_job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        need_service("redis-server")
    lc = load_local_cluster()
    services = lc.start_services(tmp_path_factory.mktemp("redis"), postgres=False)
    yield services.queue_url
    lc.stop_services(services)


@pytest.fixture
def on_redis(redis_server, monkeypatch):
    monkeypatch.setenv("POLYCHROME_QUEUE_URL", redis_server)
    monkeypatch.setenv("POLYCHROME_WORKER_POLL_S", "0.05")
    monkeypatch.setenv("POLYCHROME_JOB_LEASE_S", "2")
    get_huey().storage.flush_queue()
    yield redis_server
    get_huey().storage.flush_queue()


def test_job_ids_travel_through_redis(on_redis):
    hq = get_huey()
    assert type(hq).__name__ == "RedisHuey"
    enqueue_job("abc")
    assert hq.pending_count() == 1
    # Another process (another machine) sees the same message.
    import redis

    raw = redis.Redis.from_url(on_redis).lrange(hq.storage.queue_key, 0, -1)
    assert len(raw) == 1 and b'"abc"' in raw[0] and b"pickle" not in raw[0]
    task = hq.dequeue()
    assert task.args == ("abc",) and hq.pending_count() == 0


@pytest.mark.database
def test_a_worker_takes_jobs_from_redis(on_redis, polychrome_home):
    """The scale-out configuration: jobs in the shared database, ids on Redis."""
    client = InProcessClient()
    job = _inbox_job(client, polychrome_home)
    assert get_huey().pending_count() == 1
    assert Worker().run(max_jobs=1, idle_exit_s=30) == 1
    done = store.get_job(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert get_huey().pending_count() == 0


def test_an_unreachable_queue_makes_the_service_unready_not_broken(monkeypatch):
    monkeypatch.setenv("POLYCHROME_QUEUE_URL", f"redis://127.0.0.1:{_free_port()}/0")
    client = InProcessClient()
    r = client.get("/api/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["queue"].startswith("error")
    assert client.get("/api/health").status_code == 200
