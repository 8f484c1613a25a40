"""Issue 14's acceptance test: Polychrome scaled out on real engines survives losing an API
replica and the worker that runs a training job.

The local cluster (deploy/local_cluster.py): 2 API replicas and 2 workers on PostgreSQL +
Redis + one shared storage directory, behind nginx, every process with its own home. Through
nginx only: upload a small data set made here, import it, train a tiny DCGAN; while it
trains, kill -9 one API replica and the worker holding the job. The job must finish on the
other worker from its checkpoint (attempt 2, resumed, final step = total, the run's metrics
never going back, one registered model), the page and the API must answer throughout (a
poller sees no failure), and the job's progress must arrive as Server-Sent Events.

Needs nginx, redis-server and PostgreSQL's server programs: skipped without them unless
POLYCHROME_REQUIRE_SERVICES=1. About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from deploy import local_cluster, require

pytestmark = pytest.mark.slow

DATASET = "cluster-tiny"
MODEL_NAME = "cluster-dcgan"
STEPS = 2400  # ~40-60 s of training on a busy 2-core machine
CHECKPOINT_EVERY = 100
KILL_AT = 700  # the step (as the API reports it) at which the worker is killed
LEASE_S = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(local_cluster.missing_binaries())
    c = local_cluster.up(tmp_path_factory.mktemp("cluster"), api=2, workers=2, lease=LEASE_S,
                         env={"OMP_NUM_THREADS": "1", "POLYCHROME_BUNDLED_MODELS": "0",
                              "POLYCHROME_WORKER_POLL_S": "0.3"}, timeout=300)
    try:
        yield c
    finally:
        local_cluster.down(c, timeout=30)


def _png(style: int, i: int) -> bytes:
    """32 px pictures (the import's smallest): warm discs or cool squares, at varying
    places and sizes."""
    rng = np.random.default_rng(100 * style + i)
    yy, xx = np.mgrid[0:32, 0:32]
    cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 10)
    inside = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if style == 0 else \
        ((abs(yy - cy) <= r) & (abs(xx - cx) <= r))
    fg = np.array([220, 90, 40]) if style == 0 else np.array([40, 110, 220])
    bg = np.array([245, 235, 210]) if style == 0 else np.array([215, 230, 245])
    img = np.where(inside[..., None], fg, bg) + rng.normal(0, 6, (32, 32, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _wait_job(api: httpx.Client, job_id: str, until, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/api/jobs/{job_id}").json()
        if until(job):
            return job
        assert job["state"] not in ("failed", "cancelled"), job
        assert time.monotonic() < deadline, f"job {job_id} is still {job['state']} " \
                                            f"at step {job['step']}: {job}"
        time.sleep(0.3)


class _Poller(threading.Thread):
    """GET /, /api/health and /api/jobs/{id} through nginx in turn until stopped; every
    answer other than 200 (or no answer) is a failure."""

    def __init__(self, url: str, job_id: str):
        super().__init__(daemon=True)
        self.url, self.job_id = url, job_id
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.upstreams: Counter[str] = Counter()

    def run(self) -> None:
        paths = ["/", "/api/health", f"/api/jobs/{self.job_id}"]
        with httpx.Client(base_url=self.url, timeout=15) as client:
            i = 0
            while not self.stop.is_set():
                path = paths[i % len(paths)]
                i += 1
                try:
                    r = client.get(path)
                    if r.status_code == 200:
                        self.ok += 1
                        self.upstreams[r.headers.get("x-upstream-addr", "?")] += 1
                    else:
                        self.failures.append(f"{path}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{path}: {type(e).__name__}: {e}")
                self.stop.wait(0.1)


class _Events(threading.Thread):
    """Reads the job's Server-Sent Events through nginx, reconnecting when the replica
    serving the stream dies (as a browser's EventSource does)."""

    def __init__(self, url: str, job_id: str):
        super().__init__(daemon=True)
        self.url, self.job_id = url, job_id
        self.events: list[tuple[str, Any]] = []
        self.connections: list[str] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        timeout = httpx.Timeout(10, read=40)  # the app sends a keep-alive every 15 s
        while not self.done.is_set():
            try:
                with httpx.stream("GET", f"{self.url}/api/jobs/{self.job_id}/events",
                                  timeout=timeout) as r:
                    assert r.status_code == 200, r.status_code
                    assert r.headers["content-type"].startswith("text/event-stream")
                    self.connections.append(r.headers.get("x-upstream-addr", "?"))
                    event = "message"
                    for line in r.iter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            self.events.append((event, json.loads(line[5:])))
                            if event == "end":
                                self.done.set()
                                return
            except (httpx.HTTPError, AssertionError) as e:
                self.errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.5)


def _run_dir(c: local_cluster.Cluster, job: dict[str, Any]) -> Path:
    p = Path(job["run_dir"])
    return p if p.is_absolute() else Path(c.storage) / p


def _checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*")
                  if p.name.split("-")[1].isdigit())


@pytest.fixture(scope="module")
def scenario(cluster) -> SimpleNamespace:
    """The run the tests below look at: import, train, kill -9 api-1 and the job's worker
    mid-run, restart api-1, wait for the job's end; a poller and an event reader run
    through nginx all along."""
    c = cluster
    api = httpx.Client(base_url=c.url, timeout=30)
    assert len(c.by_role("api")) == 2 and len(c.by_role("worker")) == 2
    assert len({p.home for p in c.processes if p.home}) == 4  # a home per process
    assert api.get("/api/ready").json()["checks"]["workers"] == 2

    # -- a data set made here, uploaded and imported through nginx ----------------------------
    files = [("files", (f"{style}/{i:02d}.png", _png(s, i), "image/png"))
             for s, style in enumerate(("warm", "cool")) for i in range(20)]
    r = api.post("/api/datasets", data={"name": DATASET}, files=files)
    assert r.status_code == 202, r.text
    imported = _wait_job(api, r.json()["id"], lambda j: j["state"] == "succeeded", 120)
    assert imported["result"], imported

    # -- a training job -----------------------------------------------------------------------
    r = api.post("/api/jobs", json={
        "kind": "train", "model": "dcgan", "dataset": DATASET, "steps": STEPS,
        "batch_size": 8, "resolution": 16, "seed": 3, "name": MODEL_NAME,
        "config": {"model_config": {"width": 8, "z_dim": 16, "label_dim": 4},
                   "checkpoint_every": CHECKPOINT_EVERY, "sample_every": 600, "log_every": 1,
                   "keep_last": 5}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    events, poller = _Events(c.url, job_id), _Poller(c.url, job_id)
    events.start()
    poller.start()
    try:
        job = _wait_job(api, job_id, lambda j: j["state"] == "running" and j["step"] >= KILL_AT,
                        150)
        run_dir = _run_dir(c, job)
        ckpt_before = _checkpoint_steps(run_dir)
        assert ckpt_before, f"no checkpoint in {run_dir} at step {job['step']}"

        # -- kill -9 one API replica and the worker holding the job ---------------------------
        holders = [w for w in api.get("/api/workers").json()["items"]
                   if w["job_id"] == job_id]
        assert len(holders) == 1, holders
        victim = next(p for p in c.by_role("worker") if p.pid == holders[0]["pid"])
        survivor = next(p for p in c.by_role("worker") if p is not victim)
        assert local_cluster.kill(c, victim.name) and local_cluster.kill(c, "api-1")
        killed_at = time.monotonic()
        step_at_kill = api.get(f"/api/jobs/{job_id}").json()["step"]

        # The other worker reclaims the job and resumes it; meanwhile api-1 comes back.
        _wait_job(api, job_id, lambda j: j["attempts"] == 2 and j["state"] == "running", 90)
        reclaim_s = time.monotonic() - killed_at
        local_cluster.start_replica(c, "api", "api-1", timeout=120)
        final = _wait_job(api, job_id, lambda j: j["state"] == "succeeded", 240)
        events.done.wait(30)
    finally:
        poller.stop.set()
        poller.join(20)
        events.done.set()
    yield SimpleNamespace(c=c, api=api, job_id=job_id, final=final, run_dir=run_dir,
                          ckpt_before=ckpt_before, step_at_kill=step_at_kill,
                          reclaim_s=reclaim_s, victim=victim, survivor=survivor,
                          poller=poller, events=events)
    api.close()


def test_the_job_finishes_once_on_the_other_worker_from_its_checkpoint(scenario):
    sc, api = scenario, scenario.api
    final = sc.final
    assert final["attempts"] == 2 and final["step"] == final["total"] == STEPS, final
    assert final["result"]["resumed"] is True and final["result"]["steps"] == STEPS, final
    assert final["result"]["model"]["name"] == MODEL_NAME
    assert sc.reclaim_s < 4 * LEASE_S + 30, f"the job took {sc.reclaim_s:.0f} s to resume"
    workers_now = {w["pid"] for w in api.get("/api/workers").json()["items"]}
    assert sc.victim.pid not in workers_now and sc.survivor.pid in workers_now

    # The run's metrics log: steps only ever go up (two workers at once would have
    # appended interleaved or repeated steps), and the second attempt's clock restarts at
    # a checkpoint step, not at 0.
    lines = [json.loads(line)
             for line in (sc.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [rec["step"] for rec in lines if "losses" in rec]
    assert steps == list(range(1, STEPS + 1)), "a step is missing or repeated"
    restarts = [i for i in range(1, len(lines)) if lines[i]["time"] < lines[i - 1]["time"]]
    assert len(restarts) == 1, "expected exactly one resume in the run's metrics log"
    resume_from = lines[restarts[0] - 1]["step"]
    assert resume_from % CHECKPOINT_EVERY == 0, resume_from
    assert 0 < sc.ckpt_before[-1] <= resume_from, (resume_from, sc.ckpt_before)
    assert resume_from <= max(sc.step_at_kill, sc.ckpt_before[-1]) + CHECKPOINT_EVERY
    assert STEPS in _checkpoint_steps(sc.run_dir)

    # One registered model version, and every replica sees the same finished job.
    versions = api.get(f"/api/models/{MODEL_NAME}").json()["versions"]
    assert len(versions) == 1, versions
    for p in sc.c.by_role("api"):
        direct = httpx.get(f"http://127.0.0.1:{p.port}/api/jobs/{sc.job_id}",
                           timeout=10).json()
        assert direct["state"] == "succeeded" and direct["attempts"] == 2
    print(f"\ncluster test: job resumed {sc.reclaim_s:.1f} s after the kill, from step "
          f"{resume_from} (last checkpoint on disk at the kill: {sc.ckpt_before[-1]}, "
          f"API step {sc.step_at_kill})")


def test_the_page_and_the_api_answer_throughout(scenario):
    sc = scenario
    poller = sc.poller
    assert poller.ok > 50 and not poller.failures, poller.failures[:10]
    ports = {str(p.port) for p in sc.c.by_role("api")}
    # nginx's X-Upstream-Addr: "addr" or, after a retry, "dead addr, live addr".
    assert {u.rsplit(":", 1)[-1] for u in poller.upstreams} <= ports
    # The restarted replica takes requests again once nginx retries it.
    back = set()
    for _ in range(40):
        back.add(sc.api.get("/api/health").headers["x-upstream-addr"].rsplit(":", 1)[-1])
        if back == ports:
            break
        time.sleep(0.25)
    assert back == ports, back
    print(f"\ncluster test: {poller.ok} polls answered, by {dict(poller.upstreams)}")


def test_progress_arrives_as_server_sent_events(scenario):
    events = scenario.events
    kinds = [e for e, _ in events.events]
    progress = [d for e, d in events.events if e == "progress"]
    assert progress and any(0 < d["step"] < STEPS for d in progress), kinds[:20]
    assert kinds.index("progress") < kinds.index("end")
    assert events.events[-1][0] == "end" and events.events[-1][1]["state"] == "succeeded"
    print(f"\ncluster test: {len(events.events)} events over {len(events.connections)} "
          f"connection(s) ({events.connections})")


def test_the_run_samples_are_served(scenario):
    """Sample grids the worker wrote on shared storage: listed by any replica, announced
    as `sample` events."""
    sc = scenario
    on_disk = sorted(p.name for p in (sc.run_dir / "samples").glob("step-*.png"))
    assert on_disk
    listed = [s["file"] for s in sc.api.get(f"/api/jobs/{sc.job_id}/samples").json()["items"]]
    assert listed == on_disk, f"the API lists {listed}, the run has {on_disk}"
    r = sc.api.get(f"/api/jobs/{sc.job_id}/samples/{on_disk[-1]}")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert "sample" in [e for e, _ in sc.events.events], "no `sample` event arrived"


def test_a_new_replica_joins_behind_nginx(scenario):
    """start_replica with a new name: started, added to nginx's upstreams, served."""
    c = scenario.c
    new = local_cluster.start_replica(c, "api", "api-3", timeout=120)
    assert local_cluster.load(c.dir).nginx["upstreams"] == ["api-1", "api-2", "api-3"]
    seen = set()
    with httpx.Client(base_url=c.url, timeout=30) as api:
        for _ in range(30):
            r = api.get(f"/api/jobs/{scenario.job_id}")
            assert r.status_code == 200 and r.json()["state"] == "succeeded"
            seen.add(r.headers["x-upstream-addr"])
            if f"127.0.0.1:{new.port}" in seen:
                break
    assert f"127.0.0.1:{new.port}" in seen, seen
