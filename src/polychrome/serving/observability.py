"""Prometheus metrics: requests, latency, queue depth, jobs by state, pipeline cache.

Each app has its own registry (several apps in one process, e.g. in tests, do
not collide). Job and queue figures are read from the database at scrape time,
so they are right whichever process changed them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .security import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _JobsCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        from ..persistence import jobs as store
        from .jobs.queue import queued_messages

        jobs = GaugeMetricFamily("polychrome_jobs", "Jobs by state", labels=["state"])
        depth = GaugeMetricFamily("polychrome_queue_depth", "Jobs waiting to run")
        msgs = GaugeMetricFamily("polychrome_queue_messages", "Messages in the job queue")
        workers = GaugeMetricFamily("polychrome_workers_alive", "Job workers seen recently")
        try:
            counts = store.count_by_state()
            for state, n in counts.items():
                jobs.add_metric([state], n)
            depth.add_metric([], counts.get("queued", 0))
            msgs.add_metric([], queued_messages())
            workers.add_metric([], len(store.live_workers(_worker_max_age())))
        except Exception:  # a scrape must not fail because the DB is busy
            log.warning("metrics: could not read job state", exc_info=True)
        yield from (jobs, depth, msgs, workers)


def _worker_max_age() -> float:
    from ..settings import get_settings

    return max(10.0, get_settings().job_lease_s * 2)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("polychrome_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "polychrome_http_request_duration_seconds", "HTTP request latency",
            ["method", "route"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.cache_hits = Counter("polychrome_pipeline_cache_hits", "Warm model reuse",
                                  registry=r)
        self.cache_misses = Counter("polychrome_pipeline_cache_misses", "Model loads",
                                    registry=r)
        self.images = Counter("polychrome_generated_images", "Images generated", ["model"],
                              registry=r)
        self.batch_size = Histogram("polychrome_generate_batch_requests",
                                    "Requests served by one micro-batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.rate_limited = Counter("polychrome_rate_limited", "Requests refused with 429",
                                    registry=r)
        r.register(_JobsCollector())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - t0)
