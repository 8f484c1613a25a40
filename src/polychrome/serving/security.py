"""Request guards as ASGI middleware: body size cap, API keys, per-key rate limit, Host
and Origin checks (DNS rebinding, cross-site requests), a body read timeout, and answers
that never show server paths; plus the header read timeout `polychrome serve` adds to
uvicorn's h11 protocol.

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


# -- Host and Origin: DNS rebinding and cross-site requests ----------------------------------
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?\Z")


def split_list(text: str) -> list[str]:
    """A comma-separated setting -> its entries, stripped, empty ones dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1 (brackets allowed)."""
    import ipaddress

    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host(value: str) -> tuple[str, int | None] | None:
    """A Host header -> (lower-case host without brackets, port or None); None if malformed."""
    m = _HOST_RE.match(value.strip())
    if not m:
        return None
    port = int(m.group(2)) if m.group(2) else None
    if port is not None and port > 65535:
        return None
    return m.group(1).strip("[]").lower().rstrip("."), port


def parse_origin(value: str) -> tuple[str, str, int] | None:
    """"scheme://host[:port]" (or a whole URL, as a Referer) -> (scheme, host, port)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


class HostOriginMiddleware:
    """400 for a Host header the server does not answer to (DNS rebinding); 403 for a
    state-changing request a browser sends from another site (its Origin, or failing that
    its Referer, is neither the API's own origin nor listed in `allowed_origins`).

    Allowed hosts: loopback names, `bound_host`, the address the connection arrived at
    (a client that dials an IP literal), and the names in `allowed_hosts` ("*" = any;
    "*.example.org" = its subdomains). Requests without Origin and Referer (the CLI,
    scripts, the Python client) are not cross-site requests and pass.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: str = "", allowed_origins: str = "",
                 bound_host: str = ""):
        self.app = app
        hosts = [h.lower().rstrip(".") for h in split_list(allowed_hosts)]
        self.any_host = "*" in hosts
        self.hosts = set(LOOPBACK_NAMES) | {h.strip("[]") for h in hosts if "*" not in h}
        self.host_suffixes = tuple(h[1:] for h in hosts if h.startswith("*.") and len(h) > 2)
        if bound_host and bound_host not in ("0.0.0.0", "::", ""):
            self.hosts.add(bound_host.strip("[]").lower())
        origins = split_list(allowed_origins)
        self.any_origin = "*" in origins
        self.origins = {o for o in (parse_origin(x) for x in origins if x != "*") if o}

    def _host_allowed(self, host: str, scope: Scope) -> bool:
        if self.any_host or host in self.hosts or is_loopback(host):
            return True
        if self.host_suffixes and host.endswith(self.host_suffixes):
            return True
        server = scope.get("server") or (None, None)
        return server[0] is not None and host == str(server[0]).strip("[]").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_host = _header(scope, b"host")
        host = parse_host(raw_host) if raw_host is not None else None
        if raw_host is not None and scope.get("path") != "/api/health":
            if host is None:
                await send_error(send, 400, "bad_host", "malformed Host header")
                return
            if not self._host_allowed(host[0], scope):
                await send_error(send, 400, "bad_host",
                                 f"this server does not answer to host {host[0][:100]!r} "
                                 "(list it in the allowed_hosts setting)")
                return
        if scope.get("method", "GET").upper() in STATE_CHANGING and not self.any_origin:
            origin_text = _header(scope, b"origin") or _header(scope, b"referer")
            if origin_text is not None and not self._same_or_allowed(origin_text, scope, host):
                shown = origin_text.split("?")[0][:100]
                await send_error(send, 403, "cross_origin",
                                 f"cross-site request from {shown!r} refused: only the "
                                 "API's own page (or an origin in the allowed_origins "
                                 "setting) may change data from a browser")
                return
        await self.app(scope, receive, send)

    def _same_or_allowed(self, origin_text: str, scope: Scope,
                         host: tuple[str, int | None] | None) -> bool:
        origin = parse_origin(origin_text)  # "null" (sandboxed pages, file://) -> None
        if origin is None:
            return False
        if origin in self.origins:
            return True
        if host is None:
            return False
        scheme = str(scope.get("scheme", "http")).lower()
        own = (scheme, host[0], host[1] or _DEFAULT_PORTS.get(scheme, 80))
        return origin == own


# -- slow clients ----------------------------------------------------------------------------
class _BodyTimeout(Exception):
    pass


class BodyTimeoutMiddleware:
    """408 when the client stops sending a request body: each wait for the next chunk
    (while the app reads the body) may last `timeout_s` at most, so a large upload at a
    reasonable speed passes, and a client that declares 100 bytes and sends 2 does not
    hold a request open. The answer closes the connection."""

    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.timeout_s or self.timeout_s <= 0:
            await self.app(scope, receive, send)
            return
        import asyncio

        body_done = False
        timed_out = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:  # e.g. waiting for a disconnect while streaming: no limit
                return await receive()
            if timed_out:
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                timed_out = True
                raise _BodyTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # whatever the app says after the timeout, the answer is 408
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            await send_error(send, 408, "request_timeout",
                             f"the request body stopped arriving (no data for "
                             f"{self.timeout_s:g} s; setting body_timeout_s)",
                             {"Connection": "close"})


def guarded_h11_protocol(header_timeout_s: float, body_timeout_s: float) -> type:
    """uvicorn's h11 protocol with the read timeouts it lacks, for `polychrome serve`.

    - The request line and headers must arrive within `header_timeout_s` of the
      connection opening (or of the first byte of a later request on a kept-alive
      connection): else 408 and the connection closes. uvicorn waits forever.
    - After the answer to a request whose body the app did not read (a 401, a 404 ...),
      uvicorn reads the rest of the body only to discard it: the client then has
      `body_timeout_s` in all to finish sending it, or the connection closes (a trickle
      of it held the connection forever).
    The app's BodyTimeoutMiddleware times out bodies the app is reading.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json.dumps({"error": {"code": "request_timeout", "message": (
        f"the request headers did not arrive within {header_timeout_s:g} s "
        "(setting header_timeout_s)")}}).encode()
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
              + body)

    class GuardedH11Protocol(H11Protocol):
        _header_timer: Any = None
        _discard_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            if self._discard_timer is not None:
                self._discard_timer.cancel()
                self._discard_timer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                self._cancel_header_timer()
                return
            discarding = (self.cycle is not None and self.cycle.response_complete
                          and self.conn.their_state is h11.SEND_BODY)
            if not discarding and self._discard_timer is not None:
                self._discard_timer.cancel()
                self._discard_timer = None
            if self.conn.their_state is h11.IDLE:
                self._arm_header_timer()  # part of a request head: it must finish in time
                return
            self._cancel_header_timer()
            if discarding and self._discard_timer is None and body_timeout_s > 0:
                # Answered already; the rest of the body is only being thrown away.
                self._discard_timer = self.loop.call_later(body_timeout_s,
                                                           self._stop_discarding)

        def _stop_discarding(self) -> None:
            self._discard_timer = None
            if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
                self.transport.close()

        def _arm_header_timer(self) -> None:
            if self._header_timer is None and header_timeout_s > 0:
                self._header_timer = self.loop.call_later(header_timeout_s,
                                                          self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if self.transport.is_closing() or busy or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # part of a request head: tell the client why
                self.logger.info("closing a connection whose request headers did not "
                                 "arrive within %g s", header_timeout_s)
                self.transport.write(answer)
            self.transport.close()  # nothing sent at all: close quietly, as keep-alive does

    return GuardedH11Protocol


# -- server paths ----------------------------------------------------------------------------
def path_replacements(roots: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """(absolute directory, what to show instead) -> byte replacements for answer bodies,
    longest first: each directory as given and resolved, raw and as JSON escapes it."""
    import os

    pairs: dict[bytes, bytes] = {}
    for root, shown in roots:
        if not root:
            continue
        forms = {str(root).rstrip("/"), os.path.realpath(root).rstrip("/")}
        for form in forms:
            if len(form) < 2:  # never rewrite "/" itself
                continue
            for text in (form, json.dumps(form)[1:-1]):
                pairs.setdefault(text.encode() + b"/", shown.encode())
                pairs.setdefault(text.encode(), shown.rstrip("/").encode() or b".")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def server_path_replacements(settings: Any) -> list[tuple[bytes, bytes]]:
    """What `PathScrubMiddleware` rewrites for these settings: the storage root becomes
    relative (as stored paths are), the home and cache directories placeholders."""
    return path_replacements([(str(settings.storage), ""),
                              (str(settings.home), "$POLYCHROME_HOME/"),
                              (str(settings.cache), "$POLYCHROME_CACHE_DIR/")])


def scrub_paths(text: str, replacements: list[tuple[bytes, bytes]]) -> str:
    data = text.encode()
    for old, new in replacements:
        data = data.replace(old, new)
    return data.decode(errors="replace")


class PathScrubMiddleware:
    """Answers never show where the server keeps its files: in JSON bodies and event
    streams, the storage root's absolute path becomes the storage-relative form every
    stored path already has (and the home and cache directories a placeholder).

    A backstop for messages from code shared with the CLI (which shows its user absolute
    paths on purpose), e.g. a damaged model directory or a job's error."""

    MAX_BUFFER = 8 * 1024 * 1024  # bigger JSON answers pass as they are

    def __init__(self, app: ASGIApp, replacements: list[tuple[bytes, bytes]]):
        self.app = app
        self.replacements = replacements

    def _scrub(self, data: bytes) -> bytes:
        for old, new in self.replacements:
            if old in data:
                data = data.replace(old, new)
        return data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.replacements or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        mode = ""  # "json": buffer then rewrite; "stream": rewrite each chunk; "": as is
        chunks: list[bytes] = []
        size = 0

        async def flush(final: bool) -> None:
            nonlocal start, chunks
            body = b"".join(chunks)
            chunks = []
            if final:
                body = self._scrub(body)
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                start = {**start, "headers": headers}
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": not final})

        async def scrubbing_send(message: Message) -> None:
            nonlocal start, mode, size
            if message["type"] == "http.response.start":
                ctype = b""
                for k, v in message.get("headers", []):
                    if k.lower() == b"content-type":
                        ctype = v.lower()
                if ctype.startswith(b"application/json") or b"+json" in ctype:
                    mode, start = "json", message
                    return
                mode = "stream" if ctype.startswith(b"text/event-stream") else ""
                await send(message)
                return
            if message["type"] != "http.response.body" or not mode:
                await send(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if mode == "stream":
                await send({**message, "body": self._scrub(body)})
                return
            chunks.append(body)
            size += len(body)
            if not more:
                await flush(final=True)
            elif size > self.MAX_BUFFER:  # too big to hold: send on unchanged
                mode = ""
                await flush(final=False)

        await self.app(scope, receive, scrubbing_send)
