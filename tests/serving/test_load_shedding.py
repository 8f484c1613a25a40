"""Load shedding: a bound on in-flight inference and on the requests waiting for it; beyond
both, 503 `overloaded` with Retry-After at once, while cheap routes keep answering and
/api/ready reports the saturation.

The live test slows inference down on purpose: the server process gets a
`sitecustomize` that makes every micro-batch sleep first (no CPU used, so the timings do
not depend on the machine's load).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import textwrap
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from polychrome.serving.admission import (
    AdmissionController,
    Overloaded,
    admission_limits,
    cpu_cores,
)

from .live import api_error, png_bytes, register_tiny, start_server, wait_for


# -- the controller on its own ----------------------------------------------------------------
def test_limits_default_to_the_cores():
    cores = cpu_cores()
    assert admission_limits(SimpleNamespace(max_inflight=0, max_waiting=-1)) == \
        (max(4, 4 * cores), 3 * max(4, 4 * cores))
    assert admission_limits(SimpleNamespace(max_inflight=3, max_waiting=0)) == (3, 0)
    with pytest.raises(ValueError):
        AdmissionController(0, 1)


def test_slots_waiting_line_and_refusal():
    async def scenario() -> None:
        ac = AdmissionController(2, 1)
        gates = [asyncio.Event() for _ in range(3)]
        order: list[int] = []

        async def job(i: int) -> int:
            await gates[i].wait()
            order.append(i)
            return i

        tasks = [asyncio.create_task(ac.run(job(i))) for i in range(3)]
        await asyncio.sleep(0)
        assert (ac.inflight, ac.waiting, ac.full) == (2, 1, True)
        assert not ac.saturated  # full, but nobody refused yet
        # One more is refused at once, its coroutine closed unrun.
        refused = job(99)
        with pytest.raises(Overloaded) as e:
            await ac.run(refused)
        assert e.value.http_status == 503 and e.value.code == "overloaded"
        assert e.value.retry_after >= 1.0 and "max_inflight 2" in str(e.value)
        assert refused.cr_frame is None  # closed
        assert ac.refused == 1 and ac.admitted == 2 and ac.saturated
        # The first to finish hands its slot to the waiting one (first come, first served).
        gates[0].set()
        assert await tasks[0] == 0
        await asyncio.sleep(0)
        assert (ac.inflight, ac.waiting, ac.admitted) == (2, 0, 3)
        gates[1].set()
        gates[2].set()
        assert [await t for t in tasks[1:]] == [1, 2]
        assert (ac.inflight, ac.waiting, ac.full) == (0, 0, False)
        assert order == [0, 1, 2]

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line():
    async def scenario() -> None:
        ac = AdmissionController(1, 2)
        gate = asyncio.Event()
        running = asyncio.create_task(ac.run(gate.wait()))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(ac.run(asyncio.sleep(0)))
        await asyncio.sleep(0)
        assert ac.waiting == 1
        waiting.cancel()  # e.g. the generation timeout fired while it waited
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert ac.waiting == 0 and ac.inflight == 1
        gate.set()
        await running
        assert ac.inflight == 0
        # A slot handed over just as its waiter was cancelled is passed on, not lost.
        gate.clear()
        running = asyncio.create_task(ac.run(gate.wait()))
        await asyncio.sleep(0)
        w1 = asyncio.create_task(ac.run(asyncio.sleep(0)))
        await asyncio.sleep(0)
        ac.release()  # hand the running task's slot to w1 ...
        ac.inflight += 1  # ... (keep the books as if `running` still held its own)
        w1.cancel()  # ... and cancel w1 before it resumes
        with pytest.raises(asyncio.CancelledError):
            await w1
        assert ac.inflight == 1
        gate.set()
        await running
        assert ac.inflight == 0

    asyncio.run(scenario())


def test_retry_after_follows_recent_service_times():
    ac = AdmissionController(4, 8, service_s=2.0)
    ac.inflight = 4
    assert ac.retry_after() == pytest.approx(2.0)  # 4 ahead, 4 at a time, 2 s each
    ac.service_s = 0.01
    assert ac.retry_after() == 1.0  # never below one second
    ac.service_s = 1000.0
    assert ac.retry_after() == 60.0  # nor above a minute


# -- throughput under load: the store overlaps the next batch, one look-up per expiry ----------
def _tiny_model(home, name: str = "tiny") -> None:
    import torch

    from polychrome.models import create_model
    from polychrome.persistence.models import add_model_version

    torch.manual_seed(0)
    model = create_model("dcgan", resolution=16, width=8, z_dim=16)
    model.save_pretrained(home / f"{name}-dir")
    add_model_version(home / f"{name}-dir", name)


def test_a_batch_is_stored_while_the_next_one_computes(polychrome_home):
    from polychrome.serving.inference import GenRequest, MicroBatcher, PipelineCache

    _tiny_model(polychrome_home)
    loaded = PipelineCache(1, "cpu").get("tiny")
    first_storing, second_stored = threading.Event(), threading.Event()
    stores: list[int] = []

    def finish(results: list) -> list:
        stores.append(len(results))
        if len(stores) == 1:
            first_storing.set()
            # The first batch's store (disk) waits until the next batch has been computed
            # and handed to its own store: it did not wait behind this one.
            assert second_stored.wait(10), "the next batch waited for this batch's store"
        else:
            second_stored.set()
        return [[("stored", r[0].metadata["seed"])] for r in results]

    async def scenario() -> list:
        batcher = MicroBatcher(wait_ms=0, max_images=64, device="cpu", finish=finish)
        try:
            one = asyncio.ensure_future(batcher.submit(loaded, GenRequest(1, 1, None, 1.0)))
            assert await asyncio.to_thread(first_storing.wait, 10)
            two = asyncio.ensure_future(batcher.submit(loaded, GenRequest(1, 2, None, 1.0)))
            return await asyncio.wait_for(asyncio.gather(one, two), 30)
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) == [[("stored", "1")], [("stored", "2")]]
    assert stores == [1, 1]


def test_a_warm_model_is_found_without_a_thread(polychrome_home, monkeypatch):
    from polychrome.serving import inference
    from polychrome.serving.inference import PipelineCache

    _tiny_model(polychrome_home)
    cache = PipelineCache(1, "cpu")
    assert cache.warm("tiny") is None  # nothing loaded yet: the caller goes to a thread
    loaded = cache.get("tiny")
    assert cache.warm("tiny") is loaded
    assert cache.warm("tiny:1") is None  # never looked up: no database from the loop
    assert cache.warm("../tiny") is None
    monkeypatch.setattr(inference, "REF_TTL_S", 0.0)  # the ref expired: look it up again
    assert cache.warm("tiny") is None


def test_an_expired_model_ref_is_looked_up_once_under_load(polychrome_home, monkeypatch):
    from polychrome.persistence import models as store
    from polychrome.serving.inference import PipelineCache

    _tiny_model(polychrome_home)
    cache = PipelineCache(1, "cpu")
    loaded = cache.get("tiny")
    lookups: list[str] = []
    real = store.resolve_model

    def slow_resolve(spec: str):
        lookups.append(spec)
        time.sleep(0.2)  # a database under load
        return real(spec)

    monkeypatch.setattr(store, "resolve_model", slow_resolve)
    cache._refs.clear()  # the remembered ref expired
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: cache.get("tiny"), range(8)))
    assert all(g is loaded for g in got)
    assert lookups == ["tiny"], lookups  # one query, not one per waiting request


# -- every inference route, and only those, goes through it ------------------------------------
def test_inference_routes_refuse_when_full_and_cheap_routes_answer(polychrome_home):
    from polychrome.serving.app import create_app

    png = png_bytes(16)
    with TestClient(create_app()) as client:
        ac = client.app.state.service.admission
        ac.max_inflight, ac.max_waiting, ac.inflight = 1, 0, 1  # one running, no line
        refused = [
            client.post("/api/generate", json={"model": "m", "seed": 1}),
            client.post("/api/restyle", data={"model": "m", "style": "a"},
                        files={"image": ("a.png", png, "image/png")}),
            client.post("/api/mix", json={"model": "m", "weights": {"a": 1.0}}),
            client.post("/api/interpolate", json={"model": "m", "from": "a", "to": "b"}),
            client.post("/api/restore", data={"model": "m"},
                        files={"image": ("a.png", png, "image/png")}),
            client.post("/api/restyle/sessions", data={"model": "m"},
                        files={"image": ("a.png", png, "image/png")}),
        ]
        for r in refused:
            api_error(r, 503, "overloaded", "max_inflight 1")
            assert int(r.headers["retry-after"]) >= 1
        # Bad input is still a 4xx first, whatever the load.
        api_error(client.post("/api/generate", json={"model": "m", "n": 0}), 422,
                  "invalid_request")
        for path in ("/api/health", "/api/models", "/api/jobs", "/api/images", "/"):
            assert client.get(path).status_code == 200, path
        ready = client.get("/api/ready").json()
        assert ready["ready"] is False and ready["checks"]["saturated"] is True
        assert ready["checks"]["inference"]["refused"] == len(refused)
        metrics = client.get("/metrics").text
        assert f"polychrome_overloaded_total {len(refused)}.0" in metrics
        assert "polychrome_inference_inflight 1.0" in metrics
        assert 'polychrome_inference_limit{kind="inflight"} 1.0' in metrics


# -- a real server process under more load than its bound --------------------------------------
DELAY_S = 2.0
SLOW_INFERENCE = textwrap.dedent("""
    # Test double: every micro-batch of /api/generate sleeps first (a slow model that
    # uses no CPU). Loaded by the server process through PYTHONPATH.
    import os
    import time

    _delay = float(os.environ.get("POLYCHROME_TEST_BATCH_DELAY_S") or 0)
    if _delay > 0:
        from polychrome.serving import inference as _inference

        _run_batch = _inference.MicroBatcher._run_batch

        def _slow_run_batch(self, loaded, reqs):
            time.sleep(_delay)
            return _run_batch(self, loaded, reqs)

        _inference.MicroBatcher._run_batch = _slow_run_batch
""")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("shedding")
    home = root / "home"
    home.mkdir()
    register_tiny(home, "dcgan", "tiny", [], resolution=16, width=8, z_dim=16)
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_INFERENCE)
    server = start_server(home, workers=1, env={
        "PYTHONPATH": str(site), "POLYCHROME_TEST_BATCH_DELAY_S": str(DELAY_S),
        "POLYCHROME_MAX_INFLIGHT": "2", "POLYCHROME_MAX_WAITING": "1"})
    yield server
    server.stop()


@pytest.mark.slow
def test_requests_beyond_the_bound_get_503_at_once(slow_server):
    with slow_server.client() as c:
        # Ready (a worker is alive) and not saturated before the load.
        wait_for(lambda: c.get("/api/ready").status_code == 200, 60, what="ready")
        assert c.get("/api/ready").json()["checks"]["saturated"] is False

    def post(seed: int) -> tuple[int, float, httpx.Response]:
        with slow_server.client(timeout=60) as own:
            t0 = time.perf_counter()
            r = own.post("/api/generate", json={"model": "tiny", "seed": seed})
            return r.status_code, time.perf_counter() - t0, r

    n = 8  # 2 run, 1 waits, 5 are refused
    with concurrent.futures.ThreadPoolExecutor(n) as pool, slow_server.client() as c:
        futures = [pool.submit(post, i) for i in range(n)]
        # The refusals come back first; then, while the others still run or wait, probe.
        back = 0
        for f in concurrent.futures.as_completed(futures, timeout=60):
            back += f.result()[0] == 503
            if back == n - 3:
                break
        still_running = sum(not f.done() for f in futures)
        t0 = time.perf_counter()
        health = c.get("/api/health")
        health_s = time.perf_counter() - t0
        ready = c.get("/api/ready")
        metrics = c.get("/metrics").text
        results = [f.result() for f in futures]
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200] * 3 + [503] * 5, statuses
    assert still_running == 3
    refused = [(s, t, r) for s, t, r in results if s == 503]
    served = [(s, t, r) for s, t, r in results if s == 200]
    for _, seconds, r in refused:
        api_error(r, 503, "overloaded", "max_inflight 2")
        assert int(r.headers["retry-after"]) >= 1
        assert seconds < DELAY_S / 2, f"a refusal took {seconds:.2f} s: it waited"
    assert all(seconds >= DELAY_S for _, seconds, _ in served)
    # Liveness answered at once; readiness said saturated (503); /metrics counted.
    assert health.status_code == 200 and health_s < DELAY_S / 2
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["saturated"] is True
    assert ready.json()["checks"]["inference"]["max_inflight"] == 2
    assert "polychrome_overloaded_total 5.0" in metrics
    # The bound's worth ran; afterwards the server is ready again and serves a retry.
    with slow_server.client() as c:
        wait_for(lambda: c.get("/api/ready").status_code == 200, 30,
                 what="ready again after the load")
        assert c.post("/api/generate", json={"model": "tiny", "seed": 99}).status_code == 200
