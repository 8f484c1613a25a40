"""Request guards as ASGI middleware: body size cap, API keys, per-key rate limit.

They are plain ASGI (not BaseHTTPMiddleware) so the body cap counts bytes as
they stream in, which also catches chunked uploads that send no Content-Length,
and so a refused request never reaches a route.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes anyone may call: liveness must work for a load balancer without a key.
OPEN_PATHS = frozenset({"/api/health", "/"})
# The web page's static files hold no data: the page loads, then asks for a key.
OPEN_PREFIXES = ("/static/",)
# EventSource cannot send headers: the job-events stream alone also takes ?key=.
_SSE_PATH = re.compile(r"/api/jobs/[^/]+/events\Z")


def _key_from_query(scope: Scope) -> str | None:
    if not _SSE_PATH.match(scope.get("path", "")):
        return None
    for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if k == "key" and v.strip():
            return v.strip()
    return None


async def send_error(send: Send, status: int, code: str, message: str,
                     headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body above `max_bytes`, by Content-Length or by counting what arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        msg = f"request body larger than {limit} bytes (max_body_bytes)"
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    if int(v) > limit:
                        await send_error(send, 413, "payload_too_large", msg)
                        return
                except ValueError:
                    await send_error(send, 400, "bad_request", "invalid Content-Length")
                    return
        seen = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app says after the cap, the answer is 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await send_error(send, 413, "payload_too_large", msg)


class TokenBucket:
    """`per_minute` requests a minute per key, with a burst of the same size."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed, else the seconds to wait for the next token."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def _key_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"x-api-key":
            return v.decode("latin-1").strip()
        if k == b"authorization":
            scheme, _, token = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AuthRateLimitMiddleware:
    """API keys (when configured) on every route but health; then the rate limit per key."""

    def __init__(self, app: ASGIApp, api_keys: frozenset[str], rate_per_minute: int,
                 on_limited: Callable[[], None] | None = None):
        self.app = app
        self.keys = tuple(api_keys)
        self.bucket = TokenBucket(rate_per_minute) if rate_per_minute > 0 else None
        self.on_limited = on_limited

    def _valid(self, key: str) -> bool:
        # Constant-time comparison against every key, so timing says nothing.
        ok = False
        for k in self.keys:
            ok |= hmac.compare_digest(k.encode(), key.encode())
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        key = _key_from_headers(scope.get("headers", [])) or _key_from_query(scope)
        if self.keys:
            if key is None:
                await send_error(send, 401, "unauthorized",
                                 "an API key is required (header X-API-Key or "
                                 "Authorization: Bearer KEY)",
                                 {"WWW-Authenticate": "Bearer"})
                return
            if not self._valid(key):
                await send_error(send, 401, "unauthorized", "invalid API key",
                                 {"WWW-Authenticate": "Bearer"})
                return
        if self.bucket is not None:
            client = scope.get("client") or ("unknown", 0)
            # Limit per key; without keys, per client address.
            ident = ("key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
                     if key and self.keys else f"ip:{client[0]}")
            wait = self.bucket.take(ident)
            if wait > 0:
                if self.on_limited:
                    self.on_limited()
                retry = max(1, math.ceil(wait))
                await send_error(send, 429, "rate_limited",
                                 f"rate limit exceeded; retry after {retry} s",
                                 {"Retry-After": str(retry)})
                return
        await self.app(scope, receive, send)
