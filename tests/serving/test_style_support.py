"""The style routes' plumbing in-process: the private model for label blends, safe style
text, and the session LRU (real tiny models, no server)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from polychrome.errors import NotFound, PolychromeError
from polychrome.models import create_model
from polychrome.pipelines.generate import generate
from polychrome.pipelines.style import Restyler, load_picture
from polychrome.serving.style_sessions import SessionStore
from polychrome.serving.style_support import model_for_style, style_text

STYLES = ["ink", "neon", "pastel"]


@dataclasses.dataclass
class _Loaded:  # what PipelineCache.get returns, as far as these helpers look
    key: str
    model: object


def _tiny(arch: str, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model(arch, resolution=16, num_domains=3, width=8, **cfg).eval()
    m.meta["styles"] = list(STYLES)
    return m


def test_label_blends_run_on_a_private_copy_so_generation_is_untouched():
    model = _tiny("dcgan", z_dim=16)
    loaded = _Loaded("dc:1", model)
    want = generate(model, 1, seed=21, style="ink")[0].array
    stop = threading.Event()

    def blend_forever() -> None:
        while not stop.is_set():
            with model_for_style(loaded) as m:
                Restyler(m).render([("neon", 1.0), ("pastel", 1.0)], seed=21, op="mix")

    t = threading.Thread(target=blend_forever)
    t.start()
    try:
        # On the shared model most of these would come out blended (hooks are global).
        same = [np.array_equal(generate(model, 1, seed=21, style="ink")[0].array, want)
                for _ in range(150)]
    finally:
        stop.set()
        t.join()
    assert all(same)
    with model_for_style(loaded) as m:
        assert m is not model  # the copy
        blended = Restyler(m).render([("neon", 1.0), ("pastel", 1.0)], seed=21, op="mix")
    assert Restyler(model).render([("neon", 1.0), ("pastel", 1.0)], seed=21,
                                  op="mix").array.tobytes() == blended.array.tobytes()


def test_code_models_use_the_shared_model():
    sg = _tiny("stargan", max_width=16, style_dim=8, latent_dim=4, mapping_dim=16,
               e_width=8, e_max_width=16, d_width=8, d_max_width=16)
    with model_for_style(_Loaded("sg:1", sg)) as m:
        assert m is sg


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
