"""405 Method Not Allowed with the whole `Allow` of a path.

Starlette answers a method no route takes with the methods of the *first* route whose
path matches, but one path is often served by several routes (GET and POST
/api/jobs are two functions), so its `Allow` left methods out. This guard runs in
front of the router: when routes match the path but none takes the method, it asks the
router which methods it would take on that path and answers 405 with all of them
(OPTIONS included: the API declares no OPTIONS operation, so it is answered like any
other undeclared method). Mounted apps (the page's static files) answer for themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# The order methods are listed in `Allow`.
_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _match(routes: list[BaseRoute], scope: Scope, method: str) -> Match:
    """How the router's routes match the request's path with `method` (the best match)."""
    probe = {**scope, "method": method}
    best = Match.NONE
    for route in routes:
        match, _ = route.matches(probe)
        if match is Match.FULL:
            return match
        if match is Match.PARTIAL:
            best = match
    return best


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> set[str] | None:
    """Every method some route takes on the request's path, when none takes the request's
    own (a 405); None when one does, or when no route has the path (a 404)."""
    if _match(routes, scope, scope["method"]) is not Match.PARTIAL:
        return None
    return {m for m in _ORDER if _match(routes, scope, m) is Match.FULL} or None


def allow_header(methods: set[str]) -> str:
    return ", ".join(m for m in _ORDER if m in methods)


class MethodGuard:
    """Wraps a router's ASGI callable: 405 with the full `Allow` before routing."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]):
        self.app = app
        self.routes = routes  # the router's live list: routes added later are seen

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            methods = allowed_methods(self.routes, scope)
            if methods is not None:
                # The app's handler turns this into the one error body.
                raise HTTPException(status_code=405, headers={"Allow": allow_header(methods)})
        await self.app(scope, receive, send)


def install_method_guard(app: FastAPI) -> None:
    """Put the guard between the app's middleware and its router."""
    router = app.router
    router.middleware_stack = MethodGuard(router.middleware_stack, router.routes)
