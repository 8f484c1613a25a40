"""Warm models for the web process, and dynamic micro-batching of generate requests.

Models load once per process into an LRU cache keyed by `name:version`, so a
new version of a model is picked up while an old one stays warm until evicted.

Micro-batching: concurrent requests for the same model are gathered on the
event loop for up to `batch_wait_ms` (or until `batch_max` images) and served
by one call in a worker thread. That call (batching.run_batched) runs one
forward for many images only for batch sizes it has verified, on this model,
to give bit-identical results to the pipeline's per-image forwards; otherwise
it runs the pipeline per image. Either way the answer equals
`pipelines.generate` exactly (a test checks it). A batch's results are stored
(`finish`: PNG files and one gallery transaction) in another thread call while
the next batch computes: the store waits on the disk, the forward on the CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..models.base import GANModel
from ..pipelines.generate import generate
from ..sampling import GeneratedImage
from .batching import BatchPlanner, run_batched
from .observability import Metrics

log = logging.getLogger(__name__)

# A new model version (or a removed model) is seen by the API within this many seconds.
REF_TTL_S = 2.0


@dataclasses.dataclass
class Loaded:
    key: str  # name:version
    model: GANModel
    ref: Any  # polychrome.persistence.models.ModelRef
    planner: BatchPlanner = dataclasses.field(default_factory=BatchPlanner)


class PipelineCache:
    """An LRU of loaded models (EMA generator, eval mode) on one device."""

    def __init__(self, size: int, device: str, metrics: Metrics | None = None):
        self.size = max(1, size)
        self.device = device
        self.metrics = metrics
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._refs: dict[str, tuple[Any, float]] = {}  # spec -> (ModelRef, resolved at)
        self._resolving: dict[str, threading.Lock] = {}  # spec -> its look-up

    def _fresh_ref(self, spec: str) -> Any | None:
        with self._lock:
            hit = self._refs.get(spec)
        return hit[0] if hit is not None and time.monotonic() - hit[1] < REF_TTL_S else None

    def _resolve(self, spec: str) -> Any:
        """spec -> ModelRef, remembered for REF_TTL_S (a DB query per request otherwise).

        One query per spec at a time: when the remembered ref expires under load, the
        concurrent requests wait for one look-up instead of each querying the database."""
        from ..persistence.models import resolve_model

        ref = self._fresh_ref(spec)
        if ref is not None:
            return ref
        with self._lock:
            spec_lock = self._resolving.setdefault(spec, threading.Lock())
        with spec_lock:
            ref = self._fresh_ref(spec)  # another request just looked it up
            if ref is not None:
                return ref
            now = time.monotonic()
            ref = resolve_model(spec)
            with self._lock:
                self._refs[spec] = (ref, now)
                if len(self._refs) > 1024:
                    self._refs.clear()
                    self._resolving.clear()
        return ref

    def _hit(self, key: str) -> Loaded | None:
        """A cached entry, marked most recently used and counted (call under self._lock)."""
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            if self.metrics:
                self.metrics.cache_hits.inc()
        return hit

    def warm(self, spec: str) -> Loaded | None:
        """The model of `spec` when it is loaded and its ref fresh, else None: no database,
        no disk, so the event loop may call it (a hit spares a thread hop per request)."""
        ref = self._fresh_ref(spec)  # only specs that get() checked and resolved are here
        if ref is None:
            return None
        with self._lock:
            return self._hit(ref.spec)

    def get(self, spec: str) -> Loaded:
        """Resolve `spec` (name, name:version) and return the warm model (loading it once)."""
        from ..errors import NotFound
        from ..persistence.models import NAME_RE, load_model

        name, _, version = spec.partition(":")
        if not NAME_RE.match(name) or (version and not re.fullmatch(r"[0-9]{1,9}", version)):
            # Registered models only: the API never loads a directory named by a client.
            raise NotFound(f"no model named {spec!r}; use a registered name or name:version")
        ref = self._resolve(spec)
        key = ref.spec
        with self._lock:
            hit = self._hit(key)
            if hit is not None:
                return hit
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # two first requests for one model load it once
            with self._lock:
                hit = self._hit(key)
                if hit is not None:
                    return hit
            t0 = time.perf_counter()
            from ..settings import get_settings

            model = load_model(ref, device=self.device,
                               runtime=get_settings().runtime_for(ref.name))
            log.info("loaded model %s in %.2f s", key, time.perf_counter() - t0)
            loaded = Loaded(key=key, model=model, ref=ref)
            if self.metrics:
                self.metrics.cache_misses.inc()
            with self._lock:
                self._items[key] = loaded
                while len(self._items) > self.size:
                    old, _ = self._items.popitem(last=False)
                    log.info("evicted model %s from the pipeline cache", old)
                self._loading.pop(key, None)
            return loaded

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)


@dataclasses.dataclass
class GenRequest:
    n: int
    seed: int
    style: str | int | None
    truncation: float


def run_generate(loaded: Loaded, req: GenRequest, device: str) -> list[GeneratedImage]:
    """One request through the one generation pipeline."""
    return generate(loaded.model, req.n, seed=req.seed, style=req.style,
                    truncation=req.truncation, device=device)


@dataclasses.dataclass
class _Pending:
    req: GenRequest
    future: asyncio.Future


# Batches whose results are being stored while the next batch computes.
STORES_AHEAD = 2


def _resolve(batch: list[_Pending], results: list[Any]) -> None:
    """Each waiting request gets its result or its exception."""
    for p, res in zip(batch, results, strict=True):
        if p.future.done():
            continue
        if isinstance(res, BaseException):
            p.future.set_exception(res)
        else:
            p.future.set_result(res)


class MicroBatcher:
    """Per-model queues on the event loop; each drained batch runs in one thread call."""

    def __init__(self, *, wait_ms: float, max_images: int, device: str,
                 metrics: Metrics | None = None,
                 finish: Callable[[list[Any]], list[Any]] | None = None):
        # `finish` post-processes a batch's results in the same thread call (the
        # service stores them in the gallery: one transaction per batch).
        self.finish = finish
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_images = max(1, max_images)
        self.device = device
        self.metrics = metrics
        self._queues: dict[str, asyncio.Queue[_Pending]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._stores: set[asyncio.Task] = set()  # batches being stored (`finish`)

    async def submit(self, loaded: Loaded, req: GenRequest) -> list[GeneratedImage]:
        loop = asyncio.get_running_loop()
        q = self._queues.get(loaded.key)
        if q is None or self._tasks[loaded.key].done():
            q = self._queues[loaded.key] = asyncio.Queue()
            self._tasks[loaded.key] = loop.create_task(self._drain(loaded, q))
        fut: asyncio.Future = loop.create_future()
        await q.put(_Pending(req, fut))
        return await fut

    async def _drain(self, loaded: Loaded, q: asyncio.Queue[_Pending]) -> None:
        busy = False  # did the last batch have company? (then it is worth waiting)
        while True:
            first = await q.get()
            batch = [first]
            images = first.req.n
            # Take what queued up while the previous batch ran: under load batches form
            # without waiting. Wait `batch_wait_ms` for more only when load was seen
            # recently, so a lone client pays no added latency.
            while images < self.max_images and not q.empty():
                nxt = q.get_nowait()
                batch.append(nxt)
                images += nxt.req.n
            deadline = time.monotonic() + (self.wait_s if busy else 0.0)
            while images < self.max_images:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(q.get(), timeout=left)
                except TimeoutError:
                    break
                batch.append(nxt)
                images += nxt.req.n
            busy = len(batch) > 1 or not q.empty()
            # Requests whose caller gave up (timeout) are skipped, not computed.
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            if self.metrics:
                self.metrics.batch_size.observe(len(batch))
            try:
                results = await asyncio.to_thread(self._run_batch, loaded,
                                                  [p.req for p in batch])
            except Exception as e:
                results = [e] * len(batch)
            if self.finish is None:
                _resolve(batch, results)
                continue
            # Store this batch while the next one computes; at most STORES_AHEAD batches
            # are being stored at once (memory stays bounded when the disk is slow).
            while len(self._stores) >= STORES_AHEAD:
                await asyncio.wait(self._stores, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.get_running_loop().create_task(self._store(batch, results))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def _store(self, batch: list[_Pending], results: list[Any]) -> None:
        assert self.finish is not None
        try:
            results = await asyncio.to_thread(self.finish, results)
        except Exception as e:  # e.g. the gallery disk is full: fail this batch only
            results = [e] * len(batch)
        _resolve(batch, results)

    def _run_batch(self, loaded: Loaded, reqs: list[GenRequest]) -> list[Any]:
        # One bad request (e.g. an unknown style) fails alone, not its batch-mates.
        return run_batched(loaded.model, loaded.planner, reqs, self.device)

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        for t in self._tasks.values():
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        self._queues.clear()
        if self._stores:  # batches computed before the close are stored and answered
            await asyncio.gather(*self._stores, return_exceptions=True)
