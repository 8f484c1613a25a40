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

Sessions are rebuilt from shared storage. Several API processes (replicas behind a proxy,
possibly on other machines) share `Settings.sessions_dir`; a store given that directory
keeps in `<sessions_dir>/<id>/` (mode 0700) what rebuilds a session: the upload's bytes,
each reference's bytes, and `session.json` (model name:version, label, shape, preview
size, the references' ids in order, the last recipe). Every file is written to a temp
file beside it and renamed into place; a new session's directory is built aside and
renamed in whole. A request for an id that is not in this process's memory (another
replica opened it, this one restarted, or the LRU dropped it) rebuilds it from there:
the upload decoded again, the Restyler opened at the same preview size, the references
added again (the same pixels, so the same ids) and the last recipe restored, so it
renders the very same pixels. A session in memory follows the directory: on each
request one stat of `session.json` tells whether another replica changed it (then its
references and recipe are read again) or deleted it (then it is gone here too).
DELETE removes the directory. The directory's mtime is the session's last use (touched
at most once a minute); sessions unused for `Settings.session_ttl_s` are removed by a
sweep run when a session is opened, at most once a minute. A session keeps at most
MAX_SESSION_BYTES on storage: the oldest references make room for a new one.

Session ids are random secrets; an id that does not have their exact form is unknown
before any path is built from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import NotFound, PolychromeError
from ..utils.atomic import atomic_directory, atomic_write_bytes
from .errors import PayloadTooLarge

log = logging.getLogger(__name__)

MAX_SESSIONS = 32  # pictures with a warm content encoding, per web process
MAX_REFERENCES = 16  # reference pictures per session
PREVIEW_SIDE = 512  # native models: the longer side of the live previews, at most
MAX_SESSION_BYTES = 256 * 1024 * 1024  # upload + references of one session, on storage
SWEEP_EVERY_S = 60.0  # expired sessions are looked for at most this often (per process)
TOUCH_EVERY_S = 60.0  # a session's last use is written at most this often (per process)
SCRATCH_KEEP_S = 3600.0  # half-built / half-deleted session directories older than this go

ID_BYTES = 12  # secrets.token_urlsafe(12): 16 characters
_ID_RE = re.compile(r"[A-Za-z0-9_-]{16}\Z", re.ASCII)
_SHA_RE = re.compile(r"[0-9a-f]{64}\Z", re.ASCII)
_MODEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[0-9]{1,9}\Z", re.ASCII)
STATE_FILE = "session.json"
UPLOAD_FILE = "upload.bin"
STATE_VERSION = 1
_BUILDING = ".building"  # scratch: new session directories, renamed into place when whole
_TRASH = ".trash"  # deleted session directories, renamed here (gone at once) then removed


def valid_session_id(sid: str) -> bool:
    """The exact form of the ids this module hands out (checked before any path use)."""
    return isinstance(sid, str) and _ID_RE.match(sid) is not None


def _unknown(sid: Any) -> NotFound:
    return NotFound(f"no restyle session {str(sid)[:40]!r}: it was closed or has expired "
                    "— upload the picture again", code="unknown_session")


def _ref_file(sha: str) -> str:
    return f"ref-{sha}.bin"


Signature = tuple[int, int, int]  # (inode, mtime_ns, size) of session.json as last seen


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class SessionFiles:
    """The sessions' directories under one root on shared storage.

    Every method takes an id already checked by `valid_session_id`."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = MAX_SESSION_BYTES):
        self.root = Path(root)
        self.max_bytes = max(1, int(max_bytes))

    def dir(self, sid: str) -> Path:
        return self.root / sid

    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def create(self, session: StyleSession) -> None:
        """Write a new session's directory: built aside, renamed into place whole."""
        self._ensure_root()
        with atomic_directory(self.dir(session.id), self.root / _BUILDING) as work:
            os.chmod(work, 0o700)
            atomic_write_bytes(work / UPLOAD_FILE, session.upload)
            atomic_write_bytes(work / STATE_FILE, session.state_bytes())
        session.stored = self.signature(session.id)

    def write(self, sid: str, name: str, data: bytes) -> None:
        """Replace one file of an existing session atomically (NotFound once it is gone:
        this never makes the directory again)."""
        d = self.dir(sid)
        if not d.is_dir():
            raise _unknown(sid)
        atomic_write_bytes(d / name, data)

    def save_state(self, session: StyleSession) -> None:
        self.write(session.id, STATE_FILE, session.state_bytes())
        session.stored = self.signature(session.id)

    def read(self, sid: str, name: str) -> bytes | None:
        try:
            return (self.dir(sid) / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_state(self, sid: str) -> tuple[dict[str, Any], Signature] | None:
        """The session's state and the signature of exactly what was read; None when the
        session is not on storage (or its state is unreadable: logged)."""
        try:
            with open(self.dir(sid) / STATE_FILE, "rb") as f:
                sig = _signature(os.fstat(f.fileno()))
                raw = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            state = _checked_state(json.loads(raw))
        except (ValueError, TypeError, KeyError) as e:
            log.warning("restyle session %s: unreadable %s (%s)", sid, STATE_FILE, e)
            return None
        return state, sig

    def signature(self, sid: str) -> Signature | None:
        try:
            return _signature(os.stat(self.dir(sid) / STATE_FILE))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def touch(self, sid: str) -> None:
        """Mark the session used now (the directory's mtime; files keep theirs)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.dir(sid))

    def remove(self, sid: str) -> bool:
        """Delete a session's directory; False when it was not there. It disappears at
        once (renamed aside), so no replica ever reads half of it."""
        trash = self.root / _TRASH
        aside = trash / f"{sid}.{secrets.token_hex(4)}"
        try:
            trash.mkdir(exist_ok=True)
            os.rename(self.dir(sid), aside)
        except (FileNotFoundError, NotADirectoryError):
            return False
        shutil.rmtree(aside, ignore_errors=True)
        return True

    def sweep(self, ttl_s: float, now: float | None = None) -> list[str]:
        """Remove sessions unused for `ttl_s` seconds (and stale scratch); the ids removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return removed
        for entry in entries:
            try:
                if entry.name in (_BUILDING, _TRASH) and entry.is_dir(follow_symlinks=False):
                    for sub in os.scandir(entry.path):
                        if now - sub.stat(follow_symlinks=False).st_mtime > SCRATCH_KEEP_S:
                            shutil.rmtree(sub.path, ignore_errors=True)
                elif (valid_session_id(entry.name) and entry.is_dir(follow_symlinks=False)
                      and ttl_s > 0
                      and now - entry.stat(follow_symlinks=False).st_mtime > ttl_s
                      and self.remove(entry.name)):
                    removed.append(entry.name)
            except FileNotFoundError:  # another replica removed it meanwhile
                continue
        if removed:
            log.info("removed %d restyle session(s) unused for %.0f s", len(removed), ttl_s)
        return removed


def _checked_state(d: Any) -> dict[str, Any]:
    """A session.json read back, its fields checked (ValueError otherwise); the paths of
    its files are never read from it, only built from checked hashes."""
    if not isinstance(d, dict) or d.get("v") != STATE_VERSION:
        raise ValueError(f"state version {d.get('v') if isinstance(d, dict) else None!r}")
    if not isinstance(d["model"], str) or not _MODEL_KEY_RE.match(d["model"]):
        raise ValueError(f"model {d['model']!r}")
    if not isinstance(d["label"], str):
        raise ValueError("label")
    shape = d["shape"]
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(v, int) and v >= 0 for v in shape)):
        raise ValueError(f"shape {shape!r}")
    size = d["preview_size"]
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"preview_size {size!r}")
    refs = d["references"]
    if not isinstance(refs, list) or len(refs) > MAX_REFERENCES:
        raise ValueError("references")
    for r in refs:
        if not (isinstance(r, dict) and isinstance(r.get("sha256"), str)
                and _SHA_RE.match(r["sha256"]) and isinstance(r.get("bytes"), int)):
            raise ValueError(f"reference {r!r}")
    if d["last_recipe"] is not None and not isinstance(d["last_recipe"], dict):
        raise ValueError("last_recipe")
    return d


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
    preview_size: int | None = None  # the previews' Restyler size (None: the picture's own)
    references: OrderedDict[str, Any] = dataclasses.field(default_factory=OrderedDict)
    ref_bytes: dict[str, int] = dataclasses.field(default_factory=dict)  # file sizes stored
    last_recipe: Any = None  # pipelines.recipe.Recipe of the last render (the current style)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    used: float = dataclasses.field(default_factory=time.monotonic)
    files: SessionFiles | None = None  # shared storage (None: this process's memory only)
    stored: Signature | None = None  # session.json as last written or read here
    touched: float = dataclasses.field(default_factory=time.monotonic)

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

    # -- stored state (call with the session's lock held) ------------------------------------
    def state_bytes(self) -> bytes:
        """session.json: what rebuilds this session beside the upload and reference files."""
        recipe = self.last_recipe
        state = {"v": STATE_VERSION, "id": self.id, "model": self.model_key,
                 "label": self.label, "shape": [int(v) for v in self.shape],
                 "preview_size": self.preview_size, "input_sha256": self.input_key[1],
                 "upload_bytes": len(self.upload),
                 "references": [{"sha256": sha, "label": pic.label,
                                 "bytes": self.ref_bytes.get(sha, 0)}
                                for sha, pic in self.references.items()],
                 "last_recipe": None if recipe is None else json.loads(recipe.to_json())}
        return json.dumps(state, sort_keys=True, indent=1).encode("utf-8") + b"\n"

    def stored_bytes(self) -> int:
        return len(self.upload) + sum(self.ref_bytes.get(sha, 0) for sha in self.references)

    def add_reference(self, pic: Any, data: bytes | None = None) -> str:
        """Keep a reference picture; returns its id 'ref:<sha256>' (usable as a style).

        `data`: the reference's file (what another replica decodes again); needed when
        the session is kept on storage, where the oldest references make room for it
        (at most MAX_REFERENCES and MAX_SESSION_BYTES)."""
        sha = pic.sha256
        if self.files is None or sha in self.references:
            self.references[sha] = pic
            self.references.move_to_end(sha)
            while len(self.references) > MAX_REFERENCES:
                old, _ = self.references.popitem(last=False)
                self.ref_bytes.pop(old, None)
            if self.files is not None:
                self.files.save_state(self)  # the new order: the oldest go first
            return f"ref:{sha}"
        if data is None:
            raise ValueError("a session kept on storage needs the reference's file bytes")
        size, cap = len(data), self.files.max_bytes
        if len(self.upload) + size > cap:
            raise PayloadTooLarge(f"the reference file ({size} bytes) does not fit in this "
                                  f"session's storage ({cap} bytes with the picture)")
        keep = list(self.references)
        used = self.stored_bytes()
        drop: list[str] = []
        while keep and (len(keep) >= MAX_REFERENCES or used + size > cap):
            old = keep.pop(0)
            used -= self.ref_bytes.get(old, 0)
            drop.append(old)
        self.files.write(self.id, _ref_file(sha), bytes(data))
        for old in drop:
            self.references.pop(old, None)
            self.ref_bytes.pop(old, None)
        self.references[sha] = pic
        self.ref_bytes[sha] = size
        self.files.save_state(self)
        for old in drop:  # no longer named by session.json
            with contextlib.suppress(FileNotFoundError):
                (self.files.dir(self.id) / _ref_file(old)).unlink()
        return f"ref:{sha}"

    def remember_recipe(self, recipe: Any) -> None:
        """The recipe of the last render: the session's current style (kept on storage, so
        /full without a style renders it on any replica)."""
        changed = self.last_recipe is None or recipe.to_json() != self.last_recipe.to_json()
        self.last_recipe = recipe
        if self.files is not None and changed:
            try:
                self.files.save_state(self)
            except OSError as e:  # the render stands; only a failover would miss it
                log.warning("restyle session %s: recipe not stored (%s)", self.id, e)

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


def _preview_restyler(model: Any, picture: Any, device: str,
                      preview_size: int | None) -> Any:
    """The session's Restyler on `picture` (content encoded now, once)."""
    from ..pipelines.style import Restyler
    from ..pipelines.style_codes import is_native

    if is_native(model):
        # a picture that fits is its own preview (size "native", like a full render)
        restyler = Restyler(model, device=device, size=preview_size)
        restyler.set_image(picture.array)  # the preview: G.encode(x) once, kept
    else:
        restyler = Restyler(model, device=device)
        restyler.set_image(picture)  # G.encode(x): the expensive half, done here once
    return restyler


def _preview_size(model: Any, picture: Any) -> int | None:
    from ..pipelines.style_codes import is_native

    if not is_native(model):
        return None
    return None if max(picture.array.shape[:2]) <= PREVIEW_SIDE else PREVIEW_SIDE


class SessionStore:
    """An LRU of sessions; thread-safe.

    With `root` (the shared sessions directory) every session is also kept on storage and
    rebuilt from there when asked for and not in memory; `loader` gives the model of a
    "name:version" key, `keep` is called with a rebuilt session's pictures (the router
    keeps them for regeneration). Without `root` sessions live in this process only.
    """

    def __init__(self, size: int = MAX_SESSIONS, *, root: str | os.PathLike | None = None,
                 loader: Callable[[str], Any] | None = None, device: str = "cpu",
                 ttl_s: float = 86400.0, max_bytes: int = MAX_SESSION_BYTES,
                 keep: Callable[..., None] | None = None):
        if root is not None and loader is None:
            raise ValueError("a session store on storage needs a model loader")
        self.size = max(1, size)
        self.files = SessionFiles(root, max_bytes) if root is not None else None
        self.loader = loader
        self.device = device
        self.ttl_s = float(ttl_s)
        self.keep = keep
        self._items: OrderedDict[str, StyleSession] = OrderedDict()
        self._by_input: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._last_sweep = float("-inf")

    # -- memory -------------------------------------------------------------------------------
    def _insert(self, session: StyleSession) -> None:
        """Add to the LRU (call under self._lock); the least recently used leave memory
        (on storage they stay)."""
        self._items[session.id] = session
        self._items.move_to_end(session.id)
        self._by_input[session.input_key] = session.id
        while len(self._items) > self.size:
            _, old = self._items.popitem(last=False)
            if self._by_input.get(old.input_key) == old.id:
                del self._by_input[old.input_key]

    def _forget(self, sid: str) -> StyleSession | None:
        with self._lock:
            session = self._items.pop(sid, None)
            if session is not None and self._by_input.get(session.input_key) == sid:
                del self._by_input[session.input_key]
            return session

    # -- operations ---------------------------------------------------------------------------
    def open(self, model_key: str, model: Any, picture: Any, device: str,
             upload: bytes = b"") -> StyleSession:
        """The session for (model, picture), creating it (and encoding the content) once.

        `picture` is the uploaded picture as the model loads it by default (native models:
        at its own size), `upload` the file's bytes (what a full-size render decodes, and
        what another replica rebuilds the session from: a store on storage needs it).
        """
        key = (model_key, picture.sha256)
        with self._lock:
            sid = self._by_input.get(key)
            existing = self._items.get(sid) if sid is not None else None
        if existing is not None:
            try:
                if self.files is not None:
                    self._follow(existing)  # NotFound: closed on another replica
                with self._lock:
                    if existing.id in self._items:
                        self._items.move_to_end(existing.id)
                return existing
            except NotFound:
                pass
        if self.files is not None:
            if not upload:
                raise ValueError("a session store on storage needs the uploaded file")
            if len(upload) > self.files.max_bytes:
                raise PayloadTooLarge(f"the picture ({len(upload)} bytes) is larger than a "
                                      f"session keeps ({self.files.max_bytes} bytes)")
            self.sweep()
        preview_size = _preview_size(model, picture)
        restyler = _preview_restyler(model, picture, device, preview_size)
        session = StyleSession(id=secrets.token_urlsafe(ID_BYTES), model_key=model_key,
                               restyler=restyler, source=restyler.source, input_key=key,
                               upload=bytes(upload), label=picture.label,
                               shape=picture.aspect if all(picture.aspect)
                               else tuple(picture.array.shape[:2]),
                               preview_size=preview_size, files=self.files)
        if self.files is not None:
            self.files.create(session)  # before anyone can know its id
        with self._lock:
            sid = self._by_input.get(key)
            if sid is not None and sid in self._items:  # a concurrent upload won the race
                winner = self._items[sid]
            else:
                self._insert(session)
                return session
        if self.files is not None:
            self.files.remove(session.id)
        return winner

    def get(self, sid: str) -> StyleSession:
        """The session `sid`: from memory (checked against storage), else rebuilt from
        storage; NotFound (unknown_session) when it is in neither."""
        if not valid_session_id(sid):
            raise _unknown(sid)  # never a path: nothing is looked up for it
        with self._lock:
            session = self._items.get(sid)
            if session is not None:
                self._items.move_to_end(sid)
                session.used = time.monotonic()
        if self.files is None:
            if session is None:
                raise _unknown(sid)
            return session
        if session is None:
            return self._load(sid)
        self._follow(session)
        return session

    def close(self, sid: str) -> None:
        """Forget the session here and remove it from storage."""
        if not valid_session_id(sid):
            raise _unknown(sid)
        session = self._forget(sid)
        if self.files is None:
            if session is None:
                raise _unknown(sid)
        elif not self.files.remove(sid):
            raise _unknown(sid)  # never opened, or closed (or expired) on any replica

    def sweep(self, *, force: bool = False, now: float | None = None) -> list[str]:
        """Remove the sessions unused for the TTL from storage (and memory); runs at most
        once every SWEEP_EVERY_S unless forced. Returns the ids removed."""
        if self.files is None:
            return []
        t = time.monotonic()
        with self._lock:
            if not force and t - self._last_sweep < SWEEP_EVERY_S:
                return []
            self._last_sweep = t
        removed = self.files.sweep(self.ttl_s, now=now)
        for sid in removed:
            self._forget(sid)
        return removed

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- storage ------------------------------------------------------------------------------
    def _follow(self, session: StyleSession) -> None:
        """Bring an in-memory session up to what storage holds: gone there -> gone here;
        changed by another replica -> its references and recipe read again; and mark it
        used (at most once every TOUCH_EVERY_S)."""
        sig = self.files.signature(session.id)
        if sig is None:
            self._forget(session.id)
            raise _unknown(session.id)
        if sig != session.stored:
            with session.lock:
                if self.files.signature(session.id) != session.stored:
                    got = self.files.read_state(session.id)
                    if got is None:
                        self._forget(session.id)
                        raise _unknown(session.id)
                    self._apply(session, *got)
        now = time.monotonic()
        if now - session.touched >= TOUCH_EVERY_S:
            session.touched = now
            self.files.touch(session.id)

    def _apply(self, session: StyleSession, state: dict[str, Any], sig: Signature) -> None:
        """Take the references and last recipe of a stored state (call under the session's
        lock): new references are decoded from their files, dropped ones forgotten."""
        from ..pipelines.recipe import Recipe
        from ..pipelines.style import load_picture

        model = session.restyler.model
        refs: OrderedDict[str, Any] = OrderedDict()
        sizes: dict[str, int] = {}
        for r in state["references"]:
            sha = r["sha256"]
            pic = session.references.get(sha)
            if pic is None:
                data = self.files.read(session.id, _ref_file(sha))
                if data is None:
                    log.warning("restyle session %s: reference %s… is missing", session.id,
                                sha[:12])
                    continue
                pic = load_picture(model, data, label=str(r.get("label") or "reference"),
                                   reference=True)
                if pic.sha256 != sha:
                    log.warning("restyle session %s: reference %s… decodes to other pixels",
                                session.id, sha[:12])
                    continue
                session.restyler.add_reference(pic)
            refs[sha] = pic
            sizes[sha] = int(r["bytes"])
        session.references = refs
        session.ref_bytes = sizes
        recipe = state["last_recipe"]
        session.last_recipe = None if recipe is None else Recipe.from_json(json.dumps(recipe))
        session.stored = sig

    def _load(self, sid: str) -> StyleSession:
        """Rebuild `sid` from storage once, however many requests ask for it at a time."""
        with self._lock:
            gate = self._loading.setdefault(sid, threading.Lock())
        try:
            with gate:
                with self._lock:
                    session = self._items.get(sid)
                if session is not None:  # a concurrent request rebuilt it
                    return session
                session = self._rebuild(sid)
                with self._lock:
                    self._insert(session)
                self.files.touch(sid)  # used now
        finally:
            with self._lock:
                self._loading.pop(sid, None)
        if self.keep is not None:
            self.keep(session.source, *session.references.values())
        return session

    def _rebuild(self, sid: str) -> StyleSession:
        from ..pipelines.style import load_picture

        got = self.files.read_state(sid)
        if got is None:
            raise _unknown(sid)
        state, sig = got
        upload = self.files.read(sid, UPLOAD_FILE)
        if upload is None:
            raise _unknown(sid)
        model_key = state["model"]
        try:
            model = self.loader(model_key)
        except NotFound:
            raise NotFound(f"restyle session {sid!r} was opened on model {model_key}, which "
                           "is no longer registered — upload the picture again",
                           code="unknown_session") from None
        t0 = time.perf_counter()
        picture = load_picture(model, upload, label=str(state["label"]))
        restyler = _preview_restyler(model, picture, self.device, state["preview_size"])
        session = StyleSession(id=sid, model_key=model_key, restyler=restyler,
                               source=restyler.source, input_key=(model_key, picture.sha256),
                               upload=upload, label=picture.label,
                               shape=tuple(state["shape"]), preview_size=state["preview_size"],
                               files=self.files)
        with session.lock:
            self._apply(session, state, sig)
        log.info("rebuilt restyle session %s (%s) from storage in %.2f s", sid, model_key,
                 time.perf_counter() - t0)
        return session
