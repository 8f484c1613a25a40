"""The worker loop in-process: real queue, real SQLite, real data store, a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from polychrome.data.synthetic import make_shapes_dataset
from polychrome.persistence import jobs as store
from polychrome.serving.app import create_app
from polychrome.serving.jobs.queue import get_huey
from polychrome.serving.jobs.worker import Worker


class InProcessClient:
    """The real app over httpx's ASGI transport (no sockets): enough to queue jobs."""

    def __init__(self):
        self.app = create_app()

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        async def go():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw) -> httpx.Response:
        return self.request("POST", url, **kw)


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv("POLYCHROME_WORKER_POLL_S", "0.05")
    monkeypatch.setenv("POLYCHROME_JOB_LEASE_S", "2")


@pytest.fixture
def webhook_sink(monkeypatch):
    # A loopback receiver: webhooks reach only public addresses unless the allow-list names it.
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "127.0.0.1")
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            n = int(self.headers["content-length"])
            received.append(json.loads(self.rfile.read(n)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def _inbox_job(client: InProcessClient, home, webhook: str | None = None) -> dict:
    make_shapes_dataset(home / "inbox" / "shapes", n=4, size=32, styles=("flat", "outline"))
    r = client.post("/api/jobs", json={"kind": "import", "name": "shapes", "path": "shapes",
                                       **({"webhook": webhook} if webhook else {})})
    assert r.status_code == 202, r.text
    return r.json()


def test_worker_runs_an_import_job_and_calls_the_webhook(polychrome_home, fast, webhook_sink):
    url, received = webhook_sink
    client = InProcessClient()
    job = _inbox_job(client, polychrome_home, webhook=url)
    assert Worker().run(max_jobs=1) == 1
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done
    assert done["result"]["images"] == 8 and done["webhook_status"] == "http 204"
    assert client.get("/api/datasets/shapes").json()["images"] == 8
    assert client.request("DELETE", "/api/datasets/shapes").json()["removed_versions"] == [1]
    assert client.get("/api/datasets/shapes").status_code == 404
    assert received and received[0]["id"] == job["id"] and received[0]["state"] == "succeeded"
    # Paths outside the inbox are refused before anything is queued.
    r = client.post("/api/jobs", json={"kind": "import", "name": "x", "path": "../../etc"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe"


def test_a_queued_job_without_a_message_is_enqueued_again(polychrome_home, fast):
    job = _inbox_job(InProcessClient(), polychrome_home)
    get_huey().storage.flush_queue()  # as if the message was lost
    assert get_huey().pending_count() == 0
    assert Worker().run(max_jobs=1, idle_exit_s=20) == 1
    assert store.get_job(job["id"])["state"] == "succeeded"


def test_shutdown_mid_job_returns_it_to_the_queue(polychrome_home, fast):
    job = _inbox_job(InProcessClient(), polychrome_home)
    w = Worker()
    w.stopping.set()  # SIGTERM arrived: the job stops at its next progress report
    w.run_job(job["id"])
    back = store.get_job(job["id"])
    assert back["state"] == "queued" and back["attempts"] == 1
    assert any(t.args == (job["id"],) for t in get_huey().pending())
    assert Worker().run(max_jobs=2, idle_exit_s=3) >= 1
    assert store.get_job(job["id"])["state"] == "succeeded"


def test_eval_job_refuses_figures_of_an_unusable_evaluator(polychrome_home, fast):
    import torch

    from polychrome.models import create_model
    from polychrome.persistence.models import add_model_version, show_model

    client = InProcessClient()
    job = _inbox_job(client, polychrome_home)
    assert Worker().run(max_jobs=1) == 1 and store.get_job(job["id"])["state"] == "succeeded"
    torch.manual_seed(0)
    model = create_model("dcgan", resolution=16, width=8, z_dim=16, num_domains=2)
    model.meta["styles"] = ["flat", "outline"]
    model.save_pretrained(polychrome_home / "m")
    add_model_version(polychrome_home / "m", "tiny")
    r = client.post("/api/jobs", json={"kind": "eval", "model": "tiny", "dataset": "shapes",
                                       "metrics": ["fid"], "n": 16, "evaluator_steps": 3})
    assert r.status_code == 202, r.text
    assert Worker().run(max_jobs=1) == 1
    done = store.get_job(r.json()["id"])
    # 8 images and 3 evaluator steps: the instrument is under the bar (metrics/instrument.py),
    # so the job fails with the reason and how to fix it, and the card stays empty
    assert done["state"] == "failed", done
    assert done["error"]["code"] == "evaluator_unusable"
    assert "no figures reported" in done["error"]["message"]
    assert "evaluator_steps" in done["error"]["message"]
    assert show_model("tiny")["metrics"] == {}
