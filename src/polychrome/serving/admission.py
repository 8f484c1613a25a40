"""Load shedding: a bound on the inference one API process runs at once, and on the
requests waiting for it.

Every inference route (generate, restyle, mix, interpolate, regenerate, restore, live
sessions) runs its work through `AdmissionController.run`: up to `max_inflight` requests
run at once, up to `max_waiting` more wait their turn (first come, first served), and
one beyond both is refused at once with 503 `overloaded` and a Retry-After computed from
recent service times -- never left to queue until the client or a proxy gives up. Cheap
routes (health, readiness, metrics, jobs, the gallery, models, static files) never pass
through it, so they answer while inference is saturated.

`/api/ready` reports `saturated` -- a request was refused within the last
SATURATION_HOLD_S seconds -- and answers 503 while it is, so a load balancer sends traffic
to other replicas; `/api/health`, liveness, stays 200. `/metrics` exposes the
in-flight and waiting counts, the bounds, and the admitted and refused totals.

Everything here runs on the event loop's thread (no locks): the counters and the queue
of waiting futures are only touched from coroutines and done-callbacks.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import os
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import PolychromeError

log = logging.getLogger(__name__)
T = TypeVar("T")

# A refusal keeps /api/ready saturated this long after it, so a load balancer that polls
# every few seconds still sees a saturation that comes and goes between its polls.
SATURATION_HOLD_S = 2.0
# Service-time average: weight of the newest request (an exponential moving average).
EWMA_ALPHA = 0.2
RETRY_AFTER_MAX_S = 60
# Threads of the event loop's default executor (asyncio.to_thread) beyond one per admitted
# inference request: readiness, metrics, model look-ups never queue behind inference.
SPARE_THREADS = 8


class Overloaded(PolychromeError):
    """The process runs and queues all the inference it may: try again later (503)."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def admission_limits(settings: Any) -> tuple[int, int]:
    """(max_inflight, max_waiting) of `settings`, the automatic defaults resolved:
    in flight 4 per core (at least 4), waiting 3 x in flight."""
    inflight = settings.max_inflight if settings.max_inflight > 0 else max(4, 4 * cpu_cores())
    waiting = settings.max_waiting if settings.max_waiting >= 0 else 3 * inflight
    return inflight, waiting


class AdmissionController:
    """At most `max_inflight` admitted requests at once, at most `max_waiting` waiting."""

    def __init__(self, max_inflight: int, max_waiting: int, *, service_s: float = 1.0):
        if max_inflight < 1 or max_waiting < 0:
            raise ValueError("max_inflight must be >= 1 and max_waiting >= 0")
        self.max_inflight = max_inflight
        self.max_waiting = max_waiting
        self.inflight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.service_s = service_s  # recent time a request holds its slot (moving average)
        self.admitted = 0
        self.refused = 0
        self._refused_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Any) -> AdmissionController:
        return cls(*admission_limits(settings))

    # -- state -------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    @property
    def full(self) -> bool:
        """The next request would be refused."""
        return self.inflight >= self.max_inflight and self.waiting >= self.max_waiting

    @property
    def saturated(self) -> bool:
        """Refusing: a request was refused within the last SATURATION_HOLD_S seconds. (Merely
        full -- every slot and place in line taken, nobody refused yet -- is the load the
        process is sized for, not a reason to take it out of a balancer's rotation.)"""
        return time.monotonic() - self._refused_at < SATURATION_HOLD_S

    def retry_after(self) -> float:
        """Seconds until the requests ahead have drained (they leave max_inflight at a
        time, each after about the recent service time), at least one second."""
        ahead = self.inflight + self.waiting
        est = ahead * self.service_s / self.max_inflight
        return min(float(RETRY_AFTER_MAX_S), max(1.0, est))

    def snapshot(self) -> dict[str, Any]:
        return {"inflight": self.inflight, "waiting": self.waiting, "full": self.full,
                "max_inflight": self.max_inflight, "max_waiting": self.max_waiting,
                "admitted": self.admitted, "refused": self.refused,
                "service_s": round(self.service_s, 4)}

    # -- slots -------------------------------------------------------------------------------
    async def acquire(self) -> None:
        """Take a slot, waiting in line when all are taken; Overloaded when the line is
        full too."""
        if self.inflight < self.max_inflight and not self.waiting:
            self.inflight += 1
            self.admitted += 1
            return
        if self.waiting >= self.max_waiting:
            self.refused += 1
            self._refused_at = time.monotonic()
            raise Overloaded(
                f"the server is at capacity ({self.inflight} requests running, "
                f"{self.waiting} waiting; max_inflight {self.max_inflight}, max_waiting "
                f"{self.max_waiting}): retry after the Retry-After seconds",
                retry_after=self.retry_after())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() hands its slot over: inflight stays counted
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot arrived as the wait was cancelled: pass it on
            else:
                self._forget(fut)
            raise
        self.admitted += 1

    def release(self) -> None:
        """Give the slot to the first request still waiting, else free it."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.inflight -= 1

    def _forget(self, fut: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass

    def _served(self, seconds: float) -> None:
        self.service_s += EWMA_ALPHA * (seconds - self.service_s)

    async def run(self, aw: Awaitable[T]) -> T:
        """Await `aw` holding a slot. A refused request's coroutine is closed unrun."""
        try:
            await self.acquire()
        except BaseException:
            if inspect.iscoroutine(aw):
                aw.close()
            raise
        t0 = time.monotonic()
        try:
            return await aw
        finally:
            self._served(time.monotonic() - t0)
            self.release()


class AdmissionCollector(Collector):
    """The controller's figures for /metrics (read at scrape time)."""

    def __init__(self, controller: AdmissionController):
        self.controller = controller

    def collect(self) -> Iterator[Any]:
        c = self.controller
        g = GaugeMetricFamily("polychrome_inference_inflight",
                              "Inference requests running now")
        g.add_metric([], c.inflight)
        yield g
        g = GaugeMetricFamily("polychrome_inference_waiting",
                              "Inference requests waiting for a slot")
        g.add_metric([], c.waiting)
        yield g
        g = GaugeMetricFamily("polychrome_inference_limit",
                              "Bounds on inference requests", labels=["kind"])
        g.add_metric(["inflight"], c.max_inflight)
        g.add_metric(["waiting"], c.max_waiting)
        yield g
        g = GaugeMetricFamily("polychrome_inference_saturated",
                              "1 while inference requests are being refused")
        g.add_metric([], 1 if c.saturated else 0)
        yield g
        g = GaugeMetricFamily("polychrome_inference_service_seconds",
                              "Recent time an inference request holds its slot (average)")
        g.add_metric([], c.service_s)
        yield g
        k = CounterMetricFamily("polychrome_inference_admitted",
                                "Inference requests admitted")
        k.add_metric([], c.admitted)
        yield k
        k = CounterMetricFamily("polychrome_overloaded",
                                "Inference requests refused with 503 overloaded")
        k.add_metric([], c.refused)
        yield k


def reserve_threads(controller: AdmissionController, spare: int = SPARE_THREADS) -> None:
    """Size the running loop's default executor (asyncio.to_thread) for every admitted
    inference request plus `spare` threads, so a saturated process still runs the cheap
    routes' thread calls (readiness, metrics) at once; asyncio's own default (cores + 4
    threads) would queue them behind inference."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=controller.max_inflight + spare,
                                                 thread_name_prefix="polychrome-io"))
