"""No answer tells a client where the server keeps its files: failing imports, damaged
datasets and models, job errors and their event streams name storage-relative paths."""

from __future__ import annotations

import shutil

import pytest

from polychrome.serving.jobs.worker import Worker

from .live import png_bytes, register_tiny, shapes_zip
from .test_worker import InProcessClient

DCGAN = dict(resolution=16, num_domains=2, width=8, z_dim=16)


@pytest.fixture
def split_storage(polychrome_home, tmp_path, monkeypatch):
    """Shared storage apart from the home, as on several machines."""
    storage = tmp_path / "shared"
    monkeypatch.setenv("POLYCHROME_STORAGE_ROOT", str(storage))
    monkeypatch.setenv("POLYCHROME_WORKER_POLL_S", "0.05")
    return polychrome_home, storage


def test_failing_requests_name_no_server_path(split_storage, tmp_path):
    home, storage = split_storage
    register_tiny(home, "dcgan", "broken", ["a", "b"], **DCGAN)
    client = InProcessClient()
    answers = []

    def ask(method: str, url: str, **kw):
        r = client.request(method, url, **kw)
        assert r.status_code < 500, (url, r.text)
        answers.append(r.text)
        return r

    inbox = storage / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "notes.txt").write_text("hello")
    (inbox / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (inbox / "empty").mkdir()
    jobs = [ask("POST", "/api/jobs", json={"kind": "import", "name": "x", "path": p}).json()["id"]
            for p in ("notes.txt", "bad.zip", "empty")]
    ask("POST", "/api/jobs", json={"kind": "import", "name": "x", "path": "missing"})
    bad = [("files", ("a.zip", b"PK\x03\x04 not really a zip", "application/zip"))]
    jobs.append(ask("POST", "/api/datasets", data={"name": "up"}, files=bad).json()["id"])
    good = [("files", ("s.zip", shapes_zip(tmp_path), "application/zip"))]
    jobs.append(ask("POST", "/api/datasets", data={"name": "good"}, files=good).json()["id"])
    assert Worker().run(max_jobs=len(jobs), idle_exit_s=10) == len(jobs)
    states = [ask("GET", f"/api/jobs/{j}").json()["state"] for j in jobs]
    assert states == ["failed"] * 4 + ["succeeded"]
    ask("GET", "/api/jobs")
    for j in jobs:
        ask("GET", f"/api/jobs/{j}/events")  # the final `end` event carries the whole job
    ask("GET", "/api/datasets/good")
    ask("GET", "/api/datasets")

    # damaged files on the shared storage
    shutil.rmtree(storage / "datasets" / "good" / "1" / "images")
    (storage / "datasets" / "good" / "1" / "manifest.json").unlink()
    for url in ("/api/datasets/good", "/api/datasets/good/report",
                "/api/datasets/good/preview.png"):
        ask("GET", url)
    ask("POST", "/api/jobs", json={"kind": "train", "model": "dcgan", "dataset": "good",
                                   "steps": 1})
    for f in (storage / "models" / "broken").rglob("*.safetensors"):
        f.write_bytes(b"junk")
    ask("POST", "/api/generate", json={"model": "broken"})
    ask("GET", "/api/models/broken")
    ask("POST", "/api/restyle", data={"model": "broken"},
        files={"image": ("p.png", png_bytes(16), "image/png")})

    text = "\n".join(answers)
    for root in {home, storage, home.resolve(), storage.resolve()}:
        assert str(root) not in text
    # ... and the answers still say which file: relative to the storage root
    assert "inbox/bad.zip" in text and "datasets/good/1" in text
    assert "models/broken/1/" in text


def test_job_errors_from_shared_code_are_scrubbed_at_the_boundary(polychrome_home):
    """A message raised by code the CLI shares (which shows absolute paths to its user)."""
    from polychrome.persistence import jobs as store

    client = InProcessClient()
    job = store.create_job("import", {"name": "x", "source": "inbox:x"}, queue_max=10)
    store.claim(job["id"], "w", 30)
    where = polychrome_home / "models" / "m" / "1" / "model.safetensors"
    assert store.finish(job["id"], "w", "failed",
                        error={"code": "bad_weights", "message": f"cannot read {where}"})
    got = client.get(f"/api/jobs/{job['id']}").json()
    assert got["error"]["message"] == "cannot read models/m/1/model.safetensors"
    events = client.get(f"/api/jobs/{job['id']}/events").text
    assert str(polychrome_home) not in events and "models/m/1/model.safetensors" in events
