"""The page's files as served by `polychrome serve` (no browser): all local, all served,
open without an API key, and the key reaches the job-events stream as ?key= only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polychrome.web import STATIC_DIR

KEY = "k-web-test"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from serving.live import start_server

    server = start_server(tmp_path_factory.mktemp("static") / "home", workers=0,
                          env={"POLYCHROME_API_KEYS": KEY}, headers={"X-API-Key": KEY})
    yield server
    server.stop()


def _static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_no_external_resources_and_no_build_step():
    files = _static_files()
    names = {p.relative_to(STATIC_DIR).as_posix() for p in files}
    assert {"index.html", "style.css", "js/app.js"} <= names
    assert len([n for n in names if n.startswith("js/pages/")]) == 9  # one module per page
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"https?://|//cdn|@import|url\(", text), f"{p.name} fetches elsewhere"
        if p.suffix == ".js":
            for spec in re.findall(r"""^import .*? from ["']([^"']+)["']""", text, re.M):
                assert spec.startswith(("./", "../")), f"{p.name} imports {spec}"


def test_page_served_at_root_without_a_key(live):
    import httpx

    r = httpx.get(live.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert '<script type="module" src="/static/js/app.js">' in r.text
    for p in _static_files():
        rel = p.relative_to(STATIC_DIR).as_posix()
        got = httpx.get(f"{live.url}/static/{rel}")
        assert got.status_code == 200, rel
        assert got.content == p.read_bytes()
    for sneaky in ("/static/..%2f__init__.py", "/static/%2e%2e/__init__.py"):
        assert httpx.get(live.url + sneaky).status_code == 404, sneaky  # only static/ is served
    # The API itself still wants the key; the page is not a back door.
    assert httpx.get(live.url + "/api/models").status_code == 401
    assert "/" not in httpx.get(live.url + "/openapi.json",
                                headers={"X-API-Key": KEY}).json()["paths"]


def test_the_key_as_a_query_parameter_only_on_job_events(live):
    import httpx

    events = live.url + "/api/jobs/nope/events"
    assert httpx.get(events).status_code == 401
    assert httpx.get(events, params={"key": "wrong"}).status_code == 401
    r = httpx.get(events, params={"key": KEY})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"  # past the guard
    # Everywhere else a key in the URL (logs, history, Referer) is not accepted.
    assert httpx.get(live.url + "/api/models", params={"key": KEY}).status_code == 401
    assert httpx.get(live.url + "/api/jobs/nope", params={"key": KEY}).status_code == 401
