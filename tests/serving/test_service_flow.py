"""End to end through a real `polychrome serve` with a real worker process.

upload archive -> import job -> train job (SSE progress) -> model listed ->
generate PNG with metadata -> gallery; then kill -9 the worker mid-training and
check the restarted worker resumes the run from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from polychrome.imageio import decode_image, read_png_metadata

from .live import shapes_zip, sse_events, start_server, wait_for, wait_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("flow") / "home", workers=1)
    yield server
    with server.client() as c:
        pids = [w["pid"] for w in c.get("/api/workers").json()["items"]]
    server.stop()
    # SIGTERM to `serve` stops its workers too (gracefully), leaving no orphans.
    assert server.proc.returncode == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="module")
def dataset(live, tmp_path_factory):
    """The shapes set uploaded as one zip and imported by the worker."""
    data = shapes_zip(tmp_path_factory.mktemp("zip"), n=16, size=32)
    with live.client() as c:
        r = c.post("/api/datasets", data={"name": "shapes"},
                   files={"files": ("shapes.zip", data, "application/zip")})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["kind"] == "import" and job["state"] in ("queued", "running")
        assert r.headers["location"] == f"/api/jobs/{job['id']}"
        done = wait_job(c, job["id"], timeout=120)
    assert done["state"] == "succeeded", done
    return done["result"]


def test_import_job_result_and_dataset_routes(live, dataset):
    assert dataset["name"] == "shapes" and dataset["images"] == 64
    assert dataset["domains"] == {"flat": 16, "outline": 16, "shadow": 16, "striped": 16}
    with live.client() as c:
        listed = c.get("/api/datasets").json()["items"]
        assert [d["name"] for d in listed] == ["shapes"]
        shown = c.get("/api/datasets/shapes").json()
        assert shown["images"] == 64 and "path" not in shown
        report = c.get("/api/datasets/shapes/report").json()["items"]
        assert len(report) == 64
        assert c.get("/api/datasets/nope").status_code == 404
        preview = c.get("/api/datasets/shapes/preview.png", params={"per_domain": 4})
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
        assert decode_image(preview.content).shape[0] >= 4 * 32  # a row per style


def test_train_with_sse_then_generate_and_gallery(live, dataset, tiny_train):
    body = {"kind": "train", "dataset": "shapes", "steps": 10, "name": "tiny", "seed": 1,
            **tiny_train}
    body["config"].update(checkpoint_every=5, sample_every=5)
    with live.client() as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        events: list[tuple[str, dict]] = []
        with c.stream("GET", f"/api/jobs/{job_id}/events", timeout=180) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            for ev in sse_events(resp):
                events.append(ev)
                if ev[0] == "end":
                    break
        kinds = [k for k, _ in events]
        assert kinds[-1] == "end" and events[-1][1]["state"] == "succeeded", events[-1]
        progress = [d for k, d in events if k == "progress"]
        steps = [p["step"] for p in progress]
        assert steps == sorted(steps) and steps[-1] == 10 and len(set(steps)) >= 2
        assert any("loss_g" in p["metrics"] and "loss_d" in p["metrics"] for p in progress)
        samples = [d["url"] for k, d in events if k == "sample"]
        assert samples, kinds
        img = c.get(samples[-1])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        decode_image(img.content)
        job = c.get(f"/api/jobs/{job_id}").json()
        assert job["progress"] == 1.0 and job["result"]["model"]["name"] == "tiny"
        assert not Path(job["run_dir"]).is_absolute()  # no server paths in answers
        assert live.stored(job["run_dir"]).joinpath("checkpoints").is_dir()

        # The model is registered and described.
        models = c.get("/api/models").json()["items"]
        assert [m["name"] for m in models] == ["tiny"]
        info = c.get("/api/models/tiny").json()
        assert info["family"] == "noise" and info["styles"] == ["flat", "outline", "shadow",
                                                                "striped"]
        assert "# tiny v1" in info["card"]
        grid = c.get("/api/models/tiny/samples.png")
        assert grid.status_code == 200
        assert decode_image(grid.content).shape[0] > 4 * 16  # a row per style
        assert c.get("/api/models/tiny/samples.png").content == grid.content  # cached

        # n == 1 -> a PNG with metadata in text chunks and headers.
        r = c.post("/api/generate", json={"model": "tiny", "seed": 7, "style": "outline"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        meta = read_png_metadata(r.content)
        assert meta["model"] == "tiny" and meta["seed"] == "7" and meta["style"] == "outline"
        assert r.headers["x-polychrome-seed"] == "7"
        assert decode_image(r.content).shape == (16, 16, 3)
        single_id = int(r.headers["x-polychrome-image-id"])
        # Same request, same pixels (seeded).
        again = c.post("/api/generate", json={"model": "tiny", "seed": 7, "style": "outline"})
        assert decode_image(again.content).tobytes() == decode_image(r.content).tobytes()

        # n > 1 -> JSON with gallery URLs; image i uses seed + i.
        r = c.post("/api/generate", json={"model": "tiny", "n": 3, "seed": 100})
        assert r.status_code == 200, r.text
        images = r.json()["images"]
        assert [im["seed"] for im in images] == [100, 101, 102]
        png = c.get(images[1]["url"])
        assert png.status_code == 200 and read_png_metadata(png.content)["seed"] == "101"

        # The gallery: newest first, filters, cursor paging, metadata, delete.
        page = c.get("/api/images", params={"limit": 2}).json()
        ids = [im["id"] for im in page["items"]]
        assert ids == sorted(ids, reverse=True) and page["next_cursor"] == ids[-1]
        rest = c.get("/api/images", params={"limit": 50, "cursor": page["next_cursor"]}).json()
        all_ids = ids + [im["id"] for im in rest["items"]]
        assert len(all_ids) == 5 and single_id in all_ids and rest["next_cursor"] is None
        only = c.get("/api/images", params={"style": "outline"}).json()["items"]
        assert only and all(im["style"] == "outline" for im in only)
        assert c.get(f"/api/images/{single_id}").json()["metadata"]["seed"] == "7"
        assert c.delete(f"/api/images/{single_id}").status_code == 204
        assert c.get(f"/api/images/{single_id}").status_code == 404
        assert c.get(f"/api/images/{single_id}.png").status_code == 404

        # Unknown model / style: 4xx naming the problem, never 5xx.
        r = c.post("/api/generate", json={"model": "nope"})
        assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
        r = c.post("/api/generate", json={"model": "tiny", "style": "cubist"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_style"
        r = c.post("/api/generate", json={"model": "/etc"})
        assert r.status_code == 404  # never a server path

        # Metrics saw all of this.
        text = c.get("/metrics").text
        assert "polychrome_http_requests_total" in text
        assert 'polychrome_jobs{state="succeeded"}' in text
        assert "polychrome_pipeline_cache_hits_total" in text
        assert "polychrome_http_request_duration_seconds_bucket" in text


def _metrics_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_kill_9_worker_mid_training_resumes_from_checkpoint(live, dataset, tiny_train):
    # Long enough (a 32 px batch of 32, 120 steps) that the kill lands mid-run on a fast
    # machine too; checkpoints every 10 steps.
    steps = 120
    body = {"kind": "train", "dataset": "shapes", "steps": steps, "name": "survivor",
            "seed": 2, **tiny_train, "resolution": 32, "batch_size": 32}
    body["config"] = {**body["config"], "checkpoint_every": 10, "sample_every": 0,
                      "model_config": {"width": 16, "z_dim": 16}}
    with live.client() as c:
        job = c.post("/api/jobs", json=body).json()
        run_dir = live.stored(job["run_dir"])

        def past_checkpoint():
            j = c.get(f"/api/jobs/{job['id']}").json()
            assert j["state"] in ("queued", "running"), f"job ended before the kill: {j}"
            ckpts = list((run_dir / "checkpoints").glob("step-*"))
            return j if j["state"] == "running" and j["step"] >= 12 and ckpts else None

        wait_for(past_checkpoint, 120, interval=0.05, what="training past its first checkpoint")
        first_line = _metrics_lines(run_dir)[0]
        workers = c.get("/api/workers").json()["items"]
        victim = next(w for w in workers if w["job_id"] == job["id"])
        os.kill(victim["pid"], signal.SIGKILL)

        done = wait_job(c, job["id"], timeout=180)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["result"]["resumed"] is True and done["result"]["steps"] == steps
        # Resumed, not restarted: the log before the kill is untouched and each step
        # appears once; the run started from a checkpoint of the first attempt.
        lines = _metrics_lines(run_dir)
        assert lines[0] == first_line
        assert [ln["step"] for ln in lines if "step" in ln and "losses" in ln] == \
            list(range(1, steps + 1))
        assert "resumed from" in live.log() and str(run_dir) in live.log()
        # A new worker took over (the supervisor restarted it) and the model is registered once.
        assert c.get("/api/models/survivor").json()["versions"][0]["version"] == 1
        assert len(c.get("/api/models/survivor").json()["versions"]) == 1
        assert any(w["pid"] != victim["pid"] for w in c.get("/api/workers").json()["items"])


def test_cancel_running_training(live, dataset, tiny_train):
    body = {"kind": "train", "dataset": "shapes", "steps": 100000, "name": "cancelled",
            **tiny_train}
    body["config"].update(checkpoint_every=0, sample_every=0)
    with live.client() as c:
        job = c.post("/api/jobs", json=body).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["step"] >= 2, 120,
                 what="training to start")
        r = c.post(f"/api/jobs/{job['id']}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"] is True
        done = wait_job(c, job["id"], timeout=60)
        assert done["state"] == "cancelled" and done["error"]["code"] == "cancelled"
        # The loop checkpointed before stopping, so the run could be resumed.
        assert list(live.stored(done["run_dir"]).joinpath("checkpoints").glob("step-*"))
        assert c.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
        assert c.get("/api/models/cancelled").status_code == 404
