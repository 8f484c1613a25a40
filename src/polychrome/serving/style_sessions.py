"""Restyle sessions for live sliders: the content of an uploaded picture is encoded once.

A session binds one `Restyler` (pipelines/restyler.py) to one model version and one
picture. `Restyler.set_image` computes G.encode(x) once (the pipeline's content cache
is an LRU keyed by model and pixel sha256); every render afterwards runs only the
mapping / style encoder and G.decode. Sessions themselves live in an LRU here, keyed
by a random id, and one (model, picture) pair maps to one session, so uploading the
same picture again reuses it.

A Restyler is not thread-safe: each session has a lock, and renders of one session
run one at a time (a client moving a slider cancels stale requests anyway).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

from ..errors import NotFound, PolychromeError

MAX_SESSIONS = 32  # pictures with a warm content encoding, per web process
MAX_REFERENCES = 16  # reference pictures per session


@dataclasses.dataclass
class StyleSession:
    id: str
    model_key: str  # name:version
    restyler: Any  # pipelines.style.Restyler
    source: Any  # pipelines.style.Picture
    references: OrderedDict[str, Any] = dataclasses.field(default_factory=OrderedDict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    used: float = dataclasses.field(default_factory=time.monotonic)

    def describe(self) -> dict[str, Any]:
        model = self.restyler.model
        return {"session": self.id, "model": self.model_key, "family": model.family,
                "styles": list(model.style_names), "source_sha256": self.source.sha256,
                "resolution": int(model.config.resolution),
                "references": [f"ref:{sha}" for sha in self.references]}

    def add_reference(self, pic: Any) -> str:
        """Keep a reference picture; returns its id 'ref:<sha256>' (usable as a style)."""
        self.references[pic.sha256] = pic
        self.references.move_to_end(pic.sha256)
        while len(self.references) > MAX_REFERENCES:
            self.references.popitem(last=False)
        return f"ref:{pic.sha256}"

    def style_spec(self, text: str) -> Any:
        """'ref:<sha256>' -> the session's reference Picture; anything else unchanged."""
        if not text.startswith("ref:"):
            return text
        sha = text[4:]
        pic = self.references.get(sha)
        if pic is None:
            known = ", ".join(f"ref:{s[:12]}…" for s in self.references) or "none"
            raise PolychromeError(f"this session has no reference {text[:20]!r} (upload it to "
                                  f"/api/restyle/sessions/{self.id}/references; known: {known})",
                                  code="unknown_style")
        return pic


class SessionStore:
    """An LRU of sessions; thread-safe."""

    def __init__(self, size: int = MAX_SESSIONS):
        self.size = max(1, size)
        self._items: OrderedDict[str, StyleSession] = OrderedDict()
        self._by_input: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def open(self, model_key: str, model: Any, picture: Any, device: str) -> StyleSession:
        """The session for (model, picture), creating it (and encoding the content) once."""
        from ..pipelines.style import Restyler

        key = (model_key, picture.sha256)
        with self._lock:
            sid = self._by_input.get(key)
            if sid is not None and sid in self._items:
                self._items.move_to_end(sid)
                return self._items[sid]
        restyler = Restyler(model, device=device)
        restyler.set_image(picture)  # G.encode(x): the expensive half, done here once
        session = StyleSession(id=secrets.token_urlsafe(12), model_key=model_key,
                               restyler=restyler, source=picture)
        with self._lock:
            sid = self._by_input.get(key)
            if sid is not None and sid in self._items:  # a concurrent upload won the race
                return self._items[sid]
            self._items[session.id] = session
            self._by_input[key] = session.id
            while len(self._items) > self.size:
                _, old = self._items.popitem(last=False)
                self._by_input.pop((old.model_key, old.source.sha256), None)
        return session

    def get(self, sid: str) -> StyleSession:
        with self._lock:
            session = self._items.get(sid)
            if session is None:
                raise NotFound(f"no restyle session {sid[:40]!r}: it expired (the server keeps "
                               f"the {self.size} most recent) — upload the picture again",
                               code="unknown_session")
            self._items.move_to_end(sid)
            session.used = time.monotonic()
            return session

    def close(self, sid: str) -> None:
        with self._lock:
            session = self._items.pop(sid, None)
            if session is None:
                raise NotFound(f"no restyle session {sid[:40]!r}", code="unknown_session")
            self._by_input.pop((session.model_key, session.source.sha256), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
