"""Safety and limits on a real server: bad input is a clear 4xx, never a 5xx; the server stays up.

This server has API keys, a per-key rate limit, a 64 KiB body cap, a queue of
two jobs and no worker (so queued jobs stay queued).
"""

from __future__ import annotations

import httpx
import pytest

from .live import png_bytes, start_server

pytestmark = pytest.mark.slow

KEY, RATE_KEY = "test-key-1", "test-key-2"
RATE = 30  # requests per minute per key
BODY_CAP = 64 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("limits") / "home", workers=0,
        env={"POLYCHROME_API_KEYS": f"{KEY},{RATE_KEY}", "POLYCHROME_RATE_LIMIT": str(RATE),
             "POLYCHROME_MAX_BODY_BYTES": str(BODY_CAP), "POLYCHROME_QUEUE_MAX": "2"},
        headers={"X-API-Key": KEY})
    yield server
    server.stop()


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] and err["message"]
    return err


def test_api_keys(live):
    anon = httpx.Client(base_url=live.url, timeout=30)
    assert anon.get("/api/health").status_code == 200  # liveness needs no key
    err = _error(anon.get("/api/datasets"), 401)
    assert "API key" in err["message"]
    _error(anon.get("/openapi.json"), 401)
    _error(anon.get("/api/datasets", headers={"X-API-Key": "wrong"}), 401)
    ok = anon.get("/api/datasets", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json() == {"items": []}
    with live.client() as c:
        assert c.get("/api/jobs").status_code == 200


def test_rate_limit_answers_429_with_retry_after(live):
    with httpx.Client(base_url=live.url, headers={"X-API-Key": RATE_KEY}, timeout=30) as c:
        codes = [c.get("/api/jobs").status_code for _ in range(RATE + 5)]
        assert codes[:RATE] == [200] * RATE
        limited = c.get("/api/jobs")
        err = _error(limited, 429)
        assert err["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
    # Another key has its own budget.
    with live.client() as c:
        assert c.get("/api/jobs").status_code == 200


def test_malformed_image_upload_is_rejected_by_the_decoder(live):
    with live.client() as c:
        files = [("files", ("flat/good.png", png_bytes(32), "image/png")),
                 ("files", ("flat/broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png"))]
        err = _error(c.post("/api/datasets", data={"name": "bad"}, files=files), 422)
        assert err["code"] in ("corrupt", "unsupported")
        assert "flat/broken.png" in err["message"]
        # A truncated real PNG too.
        files = [("files", ("flat/cut.png", png_bytes(32)[:60], "image/png"))]
        err = _error(c.post("/api/datasets", data={"name": "bad"}, files=files), 422)
        assert "flat/cut.png" in err["message"]
        # Unsafe names never reach the disk.
        files = [("files", ("../../etc/x.png", png_bytes(32), "image/png"))]
        err = _error(c.post("/api/datasets", data={"name": "bad"}, files=files), 400)
        assert err["code"] == "unsafe"
        _error(c.post("/api/datasets", data={"name": "bad name!"},
                      files=[("files", ("a/b.png", png_bytes(32), "image/png"))]), 400)
        _error(c.post("/api/datasets", json={"name": "x"}), 400)
        assert c.get("/api/jobs").json()["items"] == []


def test_oversized_body_413_with_and_without_content_length(live):
    big = b"\0" * (BODY_CAP + 1)
    with live.client() as c:
        err = _error(c.post("/api/datasets", data={"name": "big"},
                            files={"files": ("a/b.png", big, "image/png")}), 413)
        assert err["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the middleware has to count
            for _ in range(20):
                yield b"x" * 8192

        r = c.post("/api/generate", content=chunks(),
                   headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        _error(r, 413)
        assert c.get("/api/health").status_code == 200


def test_bad_json_and_bad_fields_are_422(live):
    with live.client() as c:
        r = c.post("/api/generate", content=b"{not json",
                   headers={"content-type": "application/json"})
        assert "JSON" in _error(r, 422)["message"]
        err = _error(c.post("/api/generate", json={"model": "m", "n": 0}), 422)
        assert "n" in err["message"]
        _error(c.post("/api/generate", json={"model": "m", "colour": "red"}), 422)
        _error(c.post("/api/jobs", json={"kind": "bake"}), 422)
        err = _error(c.post("/api/generate", json={"model": "missing"}), 404)
        assert "missing" in err["message"]
        err = _error(c.post("/api/jobs", json={"kind": "train", "model": "nosuch",
                                               "dataset": "d"}), 400)
        assert "nosuch" in err["message"]
        err = _error(c.post("/api/jobs", json={"kind": "train", "model": "dcgan",
                                               "dataset": "absent"}), 404)
        _error(c.get("/api/jobs/0123"), 404)
        _error(c.get("/api/images/99999"), 404)
        _error(c.get("/api/models/none/samples.png"), 404)
        _error(c.get("/api/nothing-here"), 404)


def test_bounded_queue_answers_503(live):
    with live.client() as c:
        def upload(i):
            return c.post("/api/datasets", data={"name": f"q{i}"},
                          files=[("files", (f"s/{i}.png", png_bytes(32, seed=i), "image/png"))])

        assert upload(1).status_code == 202
        assert upload(2).status_code == 202
        full = upload(3)
        err = _error(full, 503)
        assert err["code"] == "queue_full" and full.headers.get("retry-after")
        # Cancelling a queued job frees a slot at once.
        first = c.get("/api/jobs", params={"state": "queued"}).json()["items"][-1]
        assert c.post(f"/api/jobs/{first['id']}/cancel").json()["state"] == "cancelled"
        assert upload(4).status_code == 202
        text = c.get("/metrics").text
        assert "polychrome_queue_depth 2.0" in text
        assert "polychrome_rate_limited_total" in text


def test_ready_reports_missing_workers(live):
    with live.client() as c:
        r = c.get("/api/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False and body["checks"]["database"] == "ok"
        assert body["checks"]["workers"] == 0
