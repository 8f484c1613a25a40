"""Restyle sessions for live sliders: the content of an uploaded picture is encoded once.

A session binds one `Restyler` (pipelines/restyler.py) to one model version and one
picture. `Restyler.set_image` computes G.encode(x) once (the pipeline's content cache
is an LRU keyed by model and pixel sha256); every render afterwards runs only the
mapping / style encoder and G.decode. Sessions themselves live in an LRU here, keyed
by a random id, and one (model, picture) pair maps to one session, so uploading the
same picture again reuses it.

A Restyler is not thread-safe: each session has a lock, and renders of one session
run one at a time (a client moving a slider cancels stale requests anyway).

Models trained on crops ("native": they run at the picture's own size) switch styles on
a PREVIEW: the session's Restyler works at a longer side of at most PREVIEW_SIDE, so a
switch costs a small decode whatever the picture's size. `full_restyler` builds a
Restyler at the full size (native, or a size asked for) from the kept upload; the
router renders the session's recipe -- built once, on the preview -- with it, so the
full-size image has the same style as the preview. Whole-picture models draw at their
resolution either way: their session has no separate preview.
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
PREVIEW_SIDE = 512  # native models: the longer side of the live previews, at most


@dataclasses.dataclass
class StyleSession:
    id: str
    model_key: str  # name:version
    restyler: Any  # pipelines.style.Restyler: previews (native models: <= PREVIEW_SIDE)
    source: Any  # pipelines.style.Picture: what the previews restyle
    input_key: tuple[str, str] = ("", "")  # (model_key, pixel sha256 of the full picture)
    upload: bytes = b""  # the uploaded file: a full-size render decodes it again
    label: str = "image"
    shape: tuple[int, int] = (0, 0)  # (H, W) of the uploaded picture
    references: OrderedDict[str, Any] = dataclasses.field(default_factory=OrderedDict)
    last_recipe: Any = None  # pipelines.recipe.Recipe of the last render (the current style)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    used: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def native(self) -> bool:
        return bool(self.restyler.native)

    def describe(self) -> dict[str, Any]:
        from ..settings import get_settings

        model = self.restyler.model
        h, w = self.shape
        ph, pw = self.source.array.shape[:2]
        return {"session": self.id, "model": self.model_key, "family": model.family,
                "styles": list(model.style_names), "source_sha256": self.source.sha256,
                "resolution": int(model.config.resolution),
                "references": [f"ref:{sha}" for sha in self.references],
                "native": self.native, "width": w, "height": h,
                "preview_width": pw if self.native else None,
                "preview_height": ph if self.native else None,
                "max_side": get_settings().native_max_side if self.native else None}

    def full_restyler(self, size: int | None, device: str,
                      references: list[Any] | None = None) -> Any:
        """A Restyler on this session's picture at full size: native (the picture's own,
        capped) or the longer side `size`, knowing `references` (a snapshot of the
        session's, taken under its lock). Whole-picture models: the session's own one
        (they draw at their resolution whatever the picture's size)."""
        from ..pipelines.style import Restyler

        if not self.native:
            return self.restyler
        full = Restyler(self.restyler.model, device=device, size=size,
                        cache=self.restyler.cache)
        # the upload, decoded again by the safe decoder at this size (a session opened
        # without its file can only offer the preview's pixels)
        full.set_image(self.upload or self.source.array)
        for pic in references or ():
            full.add_reference(pic)  # the same reference pixels (and codes) as the preview
        return full

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

    def open(self, model_key: str, model: Any, picture: Any, device: str,
             upload: bytes = b"") -> StyleSession:
        """The session for (model, picture), creating it (and encoding the content) once.

        `picture` is the uploaded picture as the model loads it by default (native models:
        at its own size), `upload` the file's bytes (what a full-size render decodes).
        """
        from ..pipelines.style import Restyler
        from ..pipelines.style_codes import is_native

        key = (model_key, picture.sha256)
        with self._lock:
            sid = self._by_input.get(key)
            if sid is not None and sid in self._items:
                self._items.move_to_end(sid)
                return self._items[sid]
        if is_native(model):
            long_side = max(picture.array.shape[:2])
            # a picture that fits is its own preview (size "native", like a full render)
            restyler = Restyler(model, device=device,
                                size=None if long_side <= PREVIEW_SIDE else PREVIEW_SIDE)
            restyler.set_image(picture.array)  # the preview: G.encode(x) once, kept
        else:
            restyler = Restyler(model, device=device)
            restyler.set_image(picture)  # G.encode(x): the expensive half, done here once
        session = StyleSession(id=secrets.token_urlsafe(12), model_key=model_key,
                               restyler=restyler, source=restyler.source, input_key=key,
                               upload=bytes(upload), label=picture.label,
                               shape=picture.aspect if all(picture.aspect)
                               else tuple(picture.array.shape[:2]))
        with self._lock:
            sid = self._by_input.get(key)
            if sid is not None and sid in self._items:  # a concurrent upload won the race
                return self._items[sid]
            self._items[session.id] = session
            self._by_input[key] = session.id
            while len(self._items) > self.size:
                _, old = self._items.popitem(last=False)
                self._by_input.pop(old.input_key, None)
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
            self._by_input.pop(session.input_key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
