"""Train jobs with `nproc` > 1: a real `polychrome worker` process trains in two torchrun
processes, relays progress, registers the model, and takes its ranks down with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polychrome.data.synthetic import make_shapes_dataset
from polychrome.training.checkpoint import latest_checkpoint, load_checkpoint

from .test_worker import InProcessClient

pytestmark = pytest.mark.slow

TINY = {"kind": "train", "model": "dcgan", "dataset": "shapes", "resolution": 16,
        "batch_size": 4, "name": "duo", "seed": 3,
        "config": {"model_config": {"width": 8, "z_dim": 16}, "log_every": 1,
                   "sample_every": 0, "checkpoint_every": 2}}


@pytest.fixture
def settings_env(monkeypatch):
    for key, value in {"POLYCHROME_WORKER_POLL_S": "0.1", "POLYCHROME_TRAIN_MAX_NPROC": "2",
                       "POLYCHROME_JOB_PROGRESS_INTERVAL_S": "0.1",
                       "POLYCHROME_JOB_LEASE_S": "3"}.items():
        monkeypatch.setenv(key, value)


def _start_worker(log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "polychrome", "worker", "--idle-exit",
                                 "120"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env)


def _wait(client: InProcessClient, job_id: str, until, timeout: float, worker, log_path):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if until(job):
            return job
        assert worker.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, (job, log_path.read_text()[-4000:])
        time.sleep(0.2)


def _done(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def _job_processes(job_id: str) -> list[int]:
    """Live processes started for the job (their command lines name its work dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"job-{job_id}".encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def test_two_process_train_job_through_a_real_worker(polychrome_home, settings_env, tmp_path):
    client = InProcessClient()
    # nproc above the server's cap: refused before any job row exists
    r = client.post("/api/jobs", json={**TINY, "steps": 4, "nproc": 3})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "config_error"
    assert "nproc 3" in err["message"] and "limit of 2" in err["message"]
    assert client.post("/api/jobs", json={**TINY, "nproc": 0}).status_code == 422
    assert client.get("/api/jobs").json()["items"] == []

    make_shapes_dataset(polychrome_home / "inbox" / "shapes", n=8, size=32,
                        styles=("flat", "outline"))
    r = client.post("/api/jobs", json={"kind": "import", "name": "shapes", "path": "shapes"})
    assert r.status_code == 202, r.text
    log_path = tmp_path / "worker.log"
    worker = _start_worker(log_path)
    try:
        imported = _wait(client, r.json()["id"], _done, 120, worker, log_path)
        assert imported["state"] == "succeeded", imported

        r = client.post("/api/jobs", json={**TINY, "steps": 4, "nproc": 2})
        assert r.status_code == 202, r.text
        assert r.json()["params"]["nproc"] == 2
        done = _wait(client, r.json()["id"], _done, 240, worker, log_path)
        assert done["state"] == "succeeded", (done.get("error"), log_path.read_text()[-6000:])

        # A rank's own error becomes the job's error (16 pictures: no batch of 16 per rank).
        r = client.post("/api/jobs", json={**TINY, "steps": 4, "nproc": 2, "batch_size": 16,
                                           "name": "toobig"})
        failed = _wait(client, r.json()["id"], _done, 120, worker, log_path)

        # A cancelled job: the ranks checkpoint and stop, and nothing is left running.
        endless = client.post("/api/jobs", json={**TINY, "steps": 100000, "nproc": 2,
                                                 "name": "endless"}).json()
        _wait(client, endless["id"], lambda j: j["step"] >= 2, 120, worker, log_path)
        assert client.post(f"/api/jobs/{endless['id']}/cancel").status_code == 202
        cancelled = _wait(client, endless["id"], _done, 120, worker, log_path)
    finally:
        _stop(worker)
    assert failed["state"] == "failed", failed
    assert failed["error"]["code"] == "config_error"
    assert "2 rank(s)" in failed["error"]["message"], failed["error"]
    assert not _job_processes(failed["id"])
    assert cancelled["state"] == "cancelled", cancelled
    assert cancelled["error"]["code"] == "cancelled"
    stopped_run = Path(cancelled["run_dir"])
    stopped_run = stopped_run if stopped_run.is_absolute() else polychrome_home / stopped_run
    assert latest_checkpoint(stopped_run / "checkpoints") is not None
    assert not _job_processes(endless["id"])
    assert client.get("/api/models/endless").status_code == 404
    result = done["result"]
    assert result["world_size"] == 2 and result["steps"] == 4 and result["resumed"] is False
    assert result["ranks"]["agree"] is True and result["ranks"]["world_size"] == 2
    assert result["ranks"]["step"] == 4
    assert result["model"]["name"] == "duo" and result["model"]["version"] == 1
    assert done["step"] == 4 and done["total"] == 4 and done["progress"] == 1.0
    assert "loss_g" in done["metrics"] and "loss_d" in done["metrics"]
    run_dir = Path(done["run_dir"])
    run_dir = run_dir if run_dir.is_absolute() else polychrome_home / run_dir
    _, state = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert state["run"]["world_size"] == 2 and state["step"] == 4
    assert client.get("/api/models/duo").json()["versions"][0]["version"] == 1
    assert not _job_processes(done["id"])
    assert not (polychrome_home / "tmp" / f"job-{done['id']}").exists()
    log_text = log_path.read_text()
    assert "training in 2 processes" in log_text and "rank 1/2" in log_text


def test_kill_9_of_the_worker_takes_the_ranks_down_and_the_job_resumes(
        polychrome_home, settings_env, tmp_path):
    client = InProcessClient()
    make_shapes_dataset(polychrome_home / "inbox" / "shapes", n=8, size=32,
                        styles=("flat", "outline"))
    r = client.post("/api/jobs", json={"kind": "import", "name": "shapes", "path": "shapes"})
    log_path = tmp_path / "worker.log"
    worker = _start_worker(log_path)
    try:
        assert _wait(client, r.json()["id"], _done, 120, worker, log_path)["state"] == \
            "succeeded"
        steps = 400
        body = {**TINY, "steps": steps, "nproc": 2, "name": "phoenix",
                "config": {**TINY["config"], "checkpoint_every": 5}}
        job_id = client.post("/api/jobs", json=body).json()["id"]

        def past_a_checkpoint(job: dict) -> bool:
            assert not _done(job), f"the job ended before the kill: {job}"
            return job["step"] >= 7

        _wait(client, job_id, past_a_checkpoint, 180, worker, log_path)
        assert len(_job_processes(job_id)) == 3  # the launcher and two ranks
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _job_processes(job_id):
            assert time.monotonic() < deadline, f"orphans: {_job_processes(job_id)}"
            time.sleep(0.1)
        job = client.get(f"/api/jobs/{job_id}").json()
        run_dir = Path(job["run_dir"])
        run_dir = run_dir if run_dir.is_absolute() else polychrome_home / run_dir
        killed_at = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))[1]["step"]
        assert 5 <= killed_at < steps

        worker = _start_worker(log_path)  # the next worker reclaims the dead one's job
        done = _wait(client, job_id, _done, 300, worker, log_path)
    finally:
        _stop(worker)
    assert done["state"] == "succeeded", (done, log_path.read_text()[-4000:])
    assert done["attempts"] == 2 and done["result"]["resumed"] is True
    assert done["result"]["world_size"] == 2 and done["result"]["steps"] == steps
    assert f"resumed from {run_dir}" in log_path.read_text()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines if "losses" in ln] == list(range(1, steps + 1))
    assert len(client.get("/api/models/phoenix").json()["versions"]) == 1
