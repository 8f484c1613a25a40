"""`polychrome serve` on a non-loopback address without API keys refuses to start unless
told to; it runs uvicorn's h11 protocol with read timeouts; the app knows the bound host."""

from __future__ import annotations

import signal

import pytest
import uvicorn
from fastapi.testclient import TestClient

from polychrome.cli.main import main


@pytest.fixture
def fake_uvicorn(monkeypatch):
    """uvicorn.run records its arguments instead of serving; SIGTERM's handler is restored."""
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    before = signal.getsignal(signal.SIGTERM)
    yield calls
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_a_public_bind_without_keys_is_refused(host, fake_uvicorn, capsys):
    code = main(["serve", "--host", host, "--workers", "0"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: refusing to serve on ") and "--insecure-public" in lines[0]
    assert "POLYCHROME_API_KEYS" in lines[0]
    assert fake_uvicorn == []


@pytest.mark.parametrize("args, env", [
    (["--insecure-public"], {}),
    ([], {"POLYCHROME_INSECURE_PUBLIC": "1"}),
    ([], {"POLYCHROME_API_KEYS": "k1"}),
])
def test_a_public_bind_is_allowed_when_meant(args, env, fake_uvicorn, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--workers", "0", *args]) == 0
    (call,) = fake_uvicorn
    assert call["host"] == "0.0.0.0"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_binds_need_nothing(host, fake_uvicorn):
    assert main(["serve", "--host", host, "--port", "0", "--workers", "0"]) == 0
    assert fake_uvicorn[0]["host"] == host


def test_serve_runs_h11_with_read_timeouts_and_tells_the_app_its_host(fake_uvicorn,
                                                                     monkeypatch):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    monkeypatch.setenv("POLYCHROME_API_KEYS", "k1")
    assert main(["serve", "--host", "api.example.org", "--port", "0", "--workers", "0"]) == 0
    call = fake_uvicorn[0]
    assert issubclass(call["http"], H11Protocol)
    headers = {"X-API-Key": "k1"}
    with TestClient(call["app"], base_url="http://api.example.org:8765") as c:
        assert c.get("/api/jobs", headers=headers).status_code == 200  # the bound name
        r = c.get("/api/jobs", headers={**headers, "Host": "other.example.org"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_host"


# -- the guards in-process -----------------------------------------------------------------------
def _app(monkeypatch, **env):
    from polychrome.serving.app import create_app

    for k, v in env.items():
        monkeypatch.setenv(f"POLYCHROME_{k.upper()}", v)
    return create_app()


def test_allowed_hosts_setting(monkeypatch):
    app = _app(monkeypatch, allowed_hosts="api.example.org, *.corp.example")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for host, status in (("api.example.org", 200), ("API.example.org.:443", 200),
                             ("x.corp.example", 200), ("corp.example", 400),
                             ("evil.example", 400), ("a b", 400), ("[::1]:80", 200),
                             ("127.0.0.1:99999", 400)):
            r = c.get("/api/jobs", headers={"Host": host})
            assert r.status_code == status, (host, r.text)
    app = _app(monkeypatch, allowed_hosts="*")
    with TestClient(app, base_url="http://anything.example") as c:
        assert c.get("/api/jobs").status_code == 200


def test_origin_rules(monkeypatch):
    app = _app(monkeypatch, allowed_origins="https://ui.example.org")
    body = {"kind": "import", "name": "x", "path": "nowhere"}  # a 4xx past the guard
    with TestClient(app, base_url="http://localhost:8765") as c:
        for headers, refused in (
                ({"Origin": "http://localhost:8765"}, False),
                ({"Origin": "http://LOCALHOST:8765"}, False),
                ({"Origin": "https://ui.example.org"}, False),
                ({"Origin": "https://ui.example.org:443"}, False),
                ({"Origin": "http://ui.example.org"}, True),
                ({"Origin": "http://localhost:8766"}, True),
                ({"Origin": "null"}, True),
                ({"Origin": "garbage"}, True),
                ({"Referer": "http://localhost:8765/index.html?x=1"}, False),
                ({"Referer": "http://evil.example/x"}, True),
                ({}, False)):
            r = c.post("/api/jobs", json=body, headers=headers)
            code = r.json()["error"]["code"]
            assert (r.status_code, code == "cross_origin") == \
                ((403, True) if refused else (r.status_code, False)), (headers, r.text)
            assert 400 <= r.status_code < 500
    # behind a proxy that terminates TLS, the scheme the client used is the one compared
    with TestClient(app, base_url="https://localhost") as c:
        r = c.post("/api/jobs", json=body, headers={"Origin": "https://localhost"})
        assert 400 <= r.status_code < 500 and r.json()["error"]["code"] != "cross_origin"
