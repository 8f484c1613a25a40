"""The style routes' plumbing in-process: label blends on the shared model, safe style
text, and the session LRU (real tiny models, no server)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from polychrome.errors import NotFound, PolychromeError
from polychrome.models import create_model
from polychrome.pipelines.generate import generate
from polychrome.pipelines.style import Restyler, load_picture
from polychrome.serving.style_sessions import SessionStore
from polychrome.serving.style_support import style_text

STYLES = ["ink", "neon", "pastel"]


def _tiny(arch: str, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model(arch, resolution=16, num_domains=3, width=8, **cfg).eval()
    m.meta["styles"] = list(STYLES)
    return m


def test_label_blends_on_the_shared_model_leave_generation_untouched():
    # The API serves every request from one warm model (no private copy, no lock): a blend
    # is a soft-label input, so a concurrent /api/generate must see exactly its own image.
    model = _tiny("dcgan", z_dim=16)
    blend = [("neon", 1.0), ("pastel", 1.0)]
    want = generate(model, 1, seed=21, style="ink")[0].array
    want_blend = Restyler(model).render(blend, seed=21, op="mix").array
    assert not np.array_equal(want, want_blend)
    stop = threading.Event()
    blends: list[bool] = []

    def blend_forever() -> None:
        while not stop.is_set():
            out = Restyler(model).render(blend, seed=21, op="mix").array
            blends.append(np.array_equal(out, want_blend))

    t = threading.Thread(target=blend_forever)
    t.start()
    try:
        # With the old forward hooks on the shared model, many of these came out blended.
        same = [np.array_equal(generate(model, 1, seed=21, style="ink")[0].array, want)
                for _ in range(150)]
    finally:
        stop.set()
        t.join()
    assert all(same) and blends and all(blends)


def test_style_text_accepts_styles_and_refuses_paths(tmp_path):
    model = _tiny("dcgan", z_dim=16)
    assert style_text(model, " neon ") == "neon"
    assert style_text(model, "2") == "2"
    assert style_text(model, "seed:5") == "seed:5"
    target = tmp_path / "ref.png"
    target.write_bytes(b"\x89PNG")
    for text in (str(target), "../../etc/passwd", "sepia"):
        with pytest.raises(PolychromeError) as e:
            style_text(model, text)
        assert e.value.code == "unknown_style" and "ink, neon, pastel" in str(e.value)


def test_session_store_reuses_and_evicts():
    sg = _tiny("stargan", max_width=16, style_dim=8, latent_dim=4, mapping_dim=16,
               e_width=8, e_max_width=16, d_width=8, d_max_width=16)
    rng = np.random.default_rng(0)
    pics = [load_picture(sg, rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
            for _ in range(3)]
    store = SessionStore(size=2)
    a = store.open("sg:1", sg, pics[0], "cpu")
    assert store.open("sg:1", sg, pics[0], "cpu") is a  # same picture: same session
    assert store.open("sg:2", sg, pics[0], "cpu") is not a  # another model version
    store.open("sg:1", sg, pics[1], "cpu")
    assert len(store) == 2
    with pytest.raises(NotFound) as e:
        store.get(a.id)  # the least recently used went first
    assert e.value.code == "unknown_session" and "upload the picture again" in str(e.value)
    rid = store.open("sg:1", sg, pics[2], "cpu").add_reference(pics[1])
    assert rid == f"ref:{pics[1].sha256}"
