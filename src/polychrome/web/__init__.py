"""The web page: static HTML, CSS and JS modules served by the API process.

No build step: the files under static/ are what the browser runs. The page talks to
the REST API only (it has no back door); `/` answers index.html, assets are under
/static/, and the API stays under /api.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC_DIR = Path(__file__).parent / "static"

# Nothing on the page is fetched from elsewhere (no CDN, no web fonts): say so to the browser.
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class _Static(StaticFiles):
    """Static files the browser revalidates (ETag) on every load, so an upgraded server
    never runs with a stale cached module next to a fresh one."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_web(app: FastAPI) -> None:
    """Serve the page at `/` and its assets at `/static/`."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache",
                                     "Content-Security-Policy": CSP,
                                     "X-Content-Type-Options": "nosniff"})

    app.mount("/static", _Static(directory=STATIC_DIR), name="static")
