"""An internal error (a bug) answers 500 with `Connection: close`: the server drops the
connection after it, so a client must not send its next request on it (it used to, and
that request met a reset connection)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from polychrome.serving.app import create_app


def test_a_500_tells_the_client_to_close():
    app = create_app()

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error",
                                  "message": "internal error (RuntimeError)"}}
    assert r.headers["connection"] == "close"
