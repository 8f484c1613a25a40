"""Errors only the service raises; all are PolychromeErrors, mapped to HTTP by `http_status`."""

from __future__ import annotations

from ..errors import JobStateError, PolychromeError, QueueFull  # noqa: F401 (re-exported)


class Unauthorized(PolychromeError):
    code = "unauthorized"
    http_status = 401


class PayloadTooLarge(PolychromeError):
    code = "payload_too_large"
    http_status = 413


class RateLimited(PolychromeError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class GenerateTimeout(PolychromeError):
    code = "timeout"
    http_status = 504


class BadRequest(PolychromeError):
    code = "bad_request"
    http_status = 400
