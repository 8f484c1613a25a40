"""The persistent job queue: huey (SQLite by default, Redis for several machines), JSON only.

The queue carries nothing but job ids. Everything else about a job (parameters,
state, progress, lease) lives in the Job table, which the API reads. huey's
dequeue is destructive (no acknowledgement or visibility timeout), so a worker
that dies after dequeuing would lose the message: the lease on the Job row is
what makes jobs survive (see store.py), and a reclaimed job is simply enqueued
again. A duplicate message is harmless because running requires winning the
atomic claim on the row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from functools import lru_cache
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer

from ...errors import ConfigError
from ...settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUE_NAME = "polychrome-jobs"


class JSONSerializer(Serializer):
    """huey messages as JSON: no pickle reaches the queue (nor leaves it)."""

    def _serialize(self, data: Any) -> bytes:
        return json.dumps(_encode(data), separators=(",", ":")).encode("utf-8")

    def _deserialize(self, data: bytes) -> Any:
        return _decode(json.loads(bytes(data).decode("utf-8")))


def _encode(obj: Any) -> Any:
    # Messages are namedtuples that may nest (on_complete / on_error); tag them so
    # they come back as Messages, and tag datetimes (eta, expires).
    if isinstance(obj, Message):
        return {"__message__": {k: _encode(v) for k, v in obj._asdict().items()}}
    if isinstance(obj, dt.datetime):
        return {"__datetime__": obj.isoformat()}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):  # huey's args are a tuple; JSON has only lists
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"cannot put {type(obj).__name__} on the job queue (JSON only)")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__message__" in obj:
            return Message(**{k: _decode(v) for k, v in obj["__message__"].items()})
        if "__datetime__" in obj:
            return dt.datetime.fromisoformat(obj["__datetime__"])
        if "__dict__" in obj:
            return {_decode(k): _decode(v) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v) for v in obj["__tuple__"])
        raise ValueError("unexpected object on the job queue")
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def make_huey(settings: Settings) -> Huey:
    url = settings.queue_url.strip()
    common = {"results": False, "serializer": JSONSerializer(), "utc": True}
    if not url or url.startswith("sqlite"):
        settings.ensure_dirs()
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else str(
            settings.home / "queue.sqlite")
        return SqliteHuey(QUEUE_NAME, filename=path, **common)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigError("queue_url is a Redis URL but the `redis` package is not "
                              "installed (pip install redis)") from None
        return RedisHuey(QUEUE_NAME, url=url, **common)
    raise ConfigError(f"unsupported queue_url {url!r}: use sqlite:///PATH or redis://HOST")


@lru_cache(maxsize=8)
def _huey_for(home: str, url: str) -> tuple[Huey, Any]:
    hq = make_huey(get_settings())
    # The one task type: "run this job id". Registered on every instance so the
    # worker can turn a dequeued message back into a call.
    run_job = hq.task(name="run_job")(_run_job_task)
    return hq, run_job


def get_huey() -> Huey:
    s = get_settings()
    return _huey_for(str(s.home), s.queue_url)[0]


def _run_job_task(job_id: str) -> None:
    from .worker import current_worker

    w = current_worker()
    if w is None:  # pragma: no cover - only a worker dequeues
        raise RuntimeError("run_job executed outside a worker")
    w.run_job(job_id)


def enqueue_job(job_id: str) -> None:
    """Put a job id on the queue (the row must already exist)."""
    s = get_settings()
    _huey_for(str(s.home), s.queue_url)[1](job_id)


def queued_messages() -> int:
    return get_huey().pending_count()
