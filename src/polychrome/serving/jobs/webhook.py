"""Tell a caller's URL that its job ended: one JSON POST, short timeout, never fatal."""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


def summary(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "kind", "state", "progress", "step", "total", "error", "result", "run_dir",
            "created", "started", "finished", "metrics")
    return {k: job.get(k) for k in keys}


def post_webhook(url: str, job: dict[str, Any]) -> str:
    """POST the job summary; returns a short status recorded on the job."""
    try:
        r = httpx.post(url, json=summary(job), timeout=TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as e:
        log.warning("job %s: webhook %s failed: %s", job.get("id"), url, e)
        return f"error: {type(e).__name__}"
    log.info("job %s: webhook %s -> %d", job.get("id"), url, r.status_code)
    return f"http {r.status_code}"
