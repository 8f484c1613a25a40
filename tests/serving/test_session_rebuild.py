"""Live restyle sessions on several replicas: two apps (two processes' worth of memory) on
one home share the sessions directory; a session opened on one is rebuilt on the other
from storage and renders the very same pixels."""

from __future__ import annotations

import builtins
import io
import json
import os
import stat
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from polychrome.errors import NotFound
from polychrome.models import create_model
from polychrome.pipelines.style import load_picture
from polychrome.serving.app import create_app
from polychrome.serving.errors import PayloadTooLarge
from polychrome.serving.style_sessions import SessionStore
from polychrome.settings import get_settings

from .live import NATIVE_META, NATIVE_STARGAN, register_tiny
from .live import api_error as _error
from .live import png_answer as _png

STYLES = ["ink", "neon", "pastel"]
STARGAN = dict(resolution=16, num_domains=3, width=8, max_width=16, style_dim=8, latent_dim=4,
               mapping_dim=16, mapping_shared_layers=2, mapping_head_layers=2, e_width=8,
               e_max_width=16, d_width=8, d_max_width=16)
S = "/api/restyle/sessions"


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("replicas") / "home"
    home.mkdir()
    register_tiny(home, "stargan", "sg", STYLES, **STARGAN)
    register_tiny(home, "stargan", "nat", STYLES, meta=NATIVE_META, **NATIVE_STARGAN)
    return home


@pytest.fixture
def replica(shared_home, monkeypatch, one_thread):
    """replica() -> a TestClient over a new app on the shared home: its own models and
    sessions in memory, the same database and storage as the others."""
    monkeypatch.setenv("POLYCHROME_HOME", str(shared_home))
    clients: list[TestClient] = []

    def start() -> TestClient:
        client = TestClient(create_app())
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for c in clients:
        c.__exit__(None, None, None)


def _img(seed: int, shape: tuple[int, int]) -> tuple[str, bytes, str]:
    arr = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return (f"p{seed}.png", buf.getvalue(), "image/png")


def _open(client: TestClient, model: str, image: tuple[str, bytes, str]) -> dict:
    r = client.post(S, data={"model": model}, files={"image": image})
    assert r.status_code == 201, r.text
    return r.json()


def _render(client: TestClient, sid: str, body: dict, what: str = "render") -> tuple:
    return _png(client.post(f"{S}/{sid}/{what}", json={**body, "save": False}))


def _sessions_dir():
    return get_settings().sessions_dir


# -- across replicas ------------------------------------------------------------------------------
def test_a_session_opened_on_one_replica_renders_the_same_pixels_on_another(replica):
    a, b = replica(), replica()
    opened = _open(a, "sg", _img(1, (20, 24)))
    sid = opened["session"]
    d = _sessions_dir() / sid
    assert stat.S_IMODE(d.stat().st_mode) == 0o700  # the upload is private
    assert sorted(p.name for p in d.iterdir()) == ["session.json", "upload.bin"]
    assert (d / "upload.bin").read_bytes() == _img(1, (20, 24))[1]

    body = {"style": "pastel", "strength": 0.7, "seed": 9}
    on_b, meta_b = _render(b, sid, body)  # not in B's memory: rebuilt from storage
    on_a, meta_a = _render(a, sid, body)
    assert np.array_equal(on_a, on_b) and meta_a["recipe"] == meta_b["recipe"]
    assert b.get(f"{S}/{sid}").json() == opened

    mix = {"weights": {"ink": 1, "neon": 3}, "seed": 2}
    assert np.array_equal(_render(a, sid, mix)[0], _render(b, sid, mix)[0])
    # the same replica after a restart (nothing in memory) answers too
    assert np.array_equal(_render(replica(), sid, body)[0], on_a)


def test_a_reference_added_on_one_replica_is_a_style_on_the_others(replica):
    a, b = replica(), replica()
    sid = _open(a, "sg", _img(2, (24, 20)))["session"]
    _render(b, sid, {"style": "ink"})  # B holds the session in memory before the reference
    ref = a.post(f"{S}/{sid}/references", files={"reference": _img(3, (32, 32))})
    assert ref.status_code == 201, ref.text
    rid = ref.json()["reference"]
    sha = rid.removeprefix("ref:")
    assert (_sessions_dir() / sid / f"ref-{sha}.bin").read_bytes() == _img(3, (32, 32))[1]

    body = {"weights": {"ink": 0.5, rid: 0.5}, "reference_style": "neon", "seed": 1}
    on_a, meta = _render(a, sid, body)
    assert [c["kind"] for c in json.loads(meta["recipe"])["components"]] == ["latent",
                                                                             "reference"]
    on_b = _render(b, sid, body)[0]  # B follows what A stored
    on_c = _render(replica(), sid, body)[0]  # C rebuilds the session with its reference
    assert np.array_equal(on_a, on_b) and np.array_equal(on_a, on_c)
    assert b.get(f"{S}/{sid}").json()["references"] == [rid]


def test_full_on_another_replica_renders_the_last_recipe_at_full_size(replica):
    a, b = replica(), replica()
    opened = _open(a, "nat", _img(4, (40, 600)))
    sid = opened["session"]
    assert (opened["preview_width"], opened["preview_height"]) == (512, 34)
    rid = a.post(f"{S}/{sid}/references",
                 files={"reference": _img(5, (64, 48))}).json()["reference"]
    body = {"weights": {"neon": 0.6, rid: 0.4}, "strength": 0.7, "seed": 4}
    preview_a, pmeta = _render(a, sid, body)  # also the session's last recipe

    full_b, fmeta = _render(b, sid, {}, "full")  # no style: the last render's recipe
    assert full_b.shape == (40, 600, 3) and fmeta["recipe"] == pmeta["recipe"]
    assert np.array_equal(_render(b, sid, body)[0], preview_a)
    assert np.array_equal(_render(a, sid, {}, "full")[0], full_b)
    # a render on B becomes the last recipe on A
    _render(b, sid, {"style": "pastel", "seed": 2})
    assert _render(a, sid, {}, "full")[1]["style"] == "pastel"


def test_a_session_closed_on_one_replica_is_gone_on_all(replica):
    a, b = replica(), replica()
    sid = _open(a, "sg", _img(6, (16, 16)))["session"]
    _render(b, sid, {"style": "ink"})
    assert b.delete(f"{S}/{sid}").status_code == 204
    assert not (_sessions_dir() / sid).exists()
    # A still had it in memory: its directory is gone, so the session is too
    _error(a.post(f"{S}/{sid}/render", json={"style": "ink"}), 404, "unknown_session",
           "upload the picture again")
    _error(a.get(f"{S}/{sid}"), 404, "unknown_session")
    _error(a.delete(f"{S}/{sid}"), 404, "unknown_session")
    _error(b.delete(f"{S}/{sid}"), 404, "unknown_session")
    # the same picture opens a new session
    assert _open(a, "sg", _img(6, (16, 16)))["session"] != sid


def test_sessions_unused_for_the_ttl_are_removed_from_storage(replica):
    a, b = replica(), replica()
    old = _open(a, "sg", _img(7, (16, 16)))["session"]
    recent = _open(a, "sg", _img(8, (16, 16)))["session"]
    ttl = get_settings().session_ttl_s
    then = time.time() - ttl - 60
    os.utime(_sessions_dir() / old, (then, then))
    _open(b, "sg", _img(9, (16, 16)))  # B's first open sweeps the directory
    assert not (_sessions_dir() / old).exists() and (_sessions_dir() / recent).is_dir()
    _error(a.get(f"{S}/{old}"), 404, "unknown_session")
    _error(b.get(f"{S}/{old}"), 404, "unknown_session")
    assert b.get(f"{S}/{recent}").status_code == 200
    # at most one sweep a minute per process: the next open leaves an aged session alone
    os.utime(_sessions_dir() / recent, (then, then))
    _open(b, "sg", _img(10, (16, 16)))
    assert (_sessions_dir() / recent).is_dir()
    # ... and a request marks a session used again (here: rebuilt by another replica)
    assert replica().get(f"{S}/{recent}").status_code == 200
    assert time.time() - (_sessions_dir() / recent).stat().st_mtime < ttl


def test_hostile_session_ids_are_404_without_touching_storage(replica):
    a = replica()
    victim = get_settings().storage / "victim"
    victim.mkdir()
    (victim / "session.json").write_text("{}")
    before = sorted(p.name for p in _sessions_dir().iterdir()) \
        if _sessions_dir().exists() else []
    for sid in ("a" * 200, "A" * 17, "nope", "...", "a.b" * 5 + "c", "%2E%2E"):
        _error(a.get(f"{S}/{sid}"), 404, "unknown_session")
        _error(a.delete(f"{S}/{sid}"), 404, "unknown_session")
        _error(a.post(f"{S}/{sid}/render", json={"style": "ink"}), 404, "unknown_session")
    for path in ("..%2Fvictim", "%2E%2E%2Fvictim"):
        assert a.delete(f"{S}/{path}").status_code == 404
    assert (victim / "session.json").is_file()
    after = sorted(p.name for p in _sessions_dir().iterdir()) \
        if _sessions_dir().exists() else []
    assert after == before


# -- the store itself ---------------------------------------------------------------------------
def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model("stargan", **STARGAN).eval()
    m.meta["styles"] = list(STYLES)
    return m


def test_the_store_checks_ids_before_any_file_access(tmp_path):
    store = SessionStore(root=tmp_path / "sessions", loader=lambda key: _model())
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "session.json").write_text("{}")
    hostile = ("../victim", "../" + "x" * 13, "a" * 17, "a" * 65, "", "..", "/etc/passwd",
               "a/b" * 6, "ü" * 16, "a\x00" * 8, "abcdefghijklmno.")
    calls: list[str] = []

    def no_files(*args, **kwargs):
        calls.append(repr(args))
        raise AssertionError(f"file access for a hostile id: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("stat", "lstat", "scandir", "listdir", "rename", "replace", "utime",
                     "open", "mkdir", "rmdir", "unlink"):
            mp.setattr(os, name, no_files)
        mp.setattr(builtins, "open", no_files)
        for sid in hostile:
            for call in (store.get, store.close):
                with pytest.raises(NotFound) as e:
                    call(sid)
                assert e.value.code == "unknown_session"
    assert calls == [] and (tmp_path / "victim" / "session.json").is_file()


def test_storage_per_session_is_bounded_and_rebuilds_keep_reference_order(tmp_path):
    upload = _img(11, (20, 20))[1]
    refs = [_img(20 + i, (16, 16))[1] for i in range(5)]
    # three references fit (the oldest make room), four do not
    cap = len(upload) + sum(sorted(len(r) for r in refs)[-3:]) + 10
    assert len(upload) + sum(sorted(len(r) for r in refs)[:4]) > cap
    model = _model()
    a = SessionStore(root=tmp_path, loader=lambda key: model, max_bytes=cap)
    with pytest.raises(PayloadTooLarge):
        SessionStore(root=tmp_path, loader=lambda key: model, max_bytes=len(upload) - 1) \
            .open("sg:1", model, load_picture(model, upload), "cpu", upload=upload)
    session = a.open("sg:1", model, load_picture(model, upload), "cpu", upload=upload)
    ids = []
    for data in refs:
        with session.lock:
            ids.append(session.add_reference(load_picture(model, data, reference=True), data))
    d = tmp_path / session.id
    kept = [f"ref-{i.removeprefix('ref:')}.bin" for i in ids[2:]]
    assert sorted(p.name for p in d.iterdir()) == sorted(["session.json", "upload.bin", *kept])
    assert sum(p.stat().st_size for p in d.iterdir() if p.suffix == ".bin") <= cap
    with pytest.raises(PayloadTooLarge):
        session.add_reference(load_picture(model, upload, reference=True), upload + b"x" * cap)
    assert list(session.references) == [i.removeprefix("ref:") for i in ids[2:]]

    other = _model()  # another replica's copy of the same weights
    b = SessionStore(root=tmp_path, loader=lambda key: other)
    rebuilt = b.get(session.id)
    assert rebuilt is not session and rebuilt.restyler.model is other
    assert rebuilt.describe() == session.describe()
    pairs = [("neon", 0.5), (rebuilt.style_spec(ids[-1]), 0.5)]
    want = session.restyler.run(session.restyler.build(
        [("neon", 0.5), (session.style_spec(ids[-1]), 0.5)], op="mix", seed=3)).array
    got = rebuilt.restyler.run(rebuilt.restyler.build(pairs, op="mix", seed=3)).array
    assert np.array_equal(got, want)
    # memory is an LRU in front of storage: a dropped session comes back
    small = SessionStore(size=1, root=tmp_path, loader=lambda key: other)
    first = small.get(session.id)
    small.open("sg:1", other, load_picture(other, refs[0]), "cpu", upload=refs[0])
    assert len(small) == 1 and small.get(session.id) is not first
