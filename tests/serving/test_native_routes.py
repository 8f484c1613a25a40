"""Pictures at their own size over HTTP: a translator trained on crops ("native") gives
the upload back at its size (or `size`), live sessions switch styles on a <= 512 px
preview and /full renders the same recipe at full size into the gallery."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from .live import NATIVE_META, NATIVE_STARGAN, register_tiny, start_server
from .live import api_error as _error
from .live import gallery_record as _stored
from .live import png_answer as _png

STYLES = ["ink", "neon", "pastel"]
WHOLE = dict(NATIVE_STARGAN, enc_blocks=2, dec_blocks=2)
# Above 20,000 padded pixels a picture runs in 256 px tiles: the 600 x 40 picture below
# is tiled at full size, its 512 x 34 preview is not.
# Uploads above 50,000 pixels are refused, yet a small picture may be rendered larger.
SERVER_ENV = {"POLYCHROME_TILE_MAX_PIXELS": "20000", "POLYCHROME_TILE_SIDE": "256",
              "POLYCHROME_NATIVE_MAX_SIDE": "1024", "POLYCHROME_MAX_PIXELS": "50000"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("native") / "home"
    home.mkdir()
    register_tiny(home, "stargan", "nat", STYLES, meta=NATIVE_META, **NATIVE_STARGAN)
    register_tiny(home, "stargan", "sg", STYLES, **WHOLE)
    server = start_server(home, workers=0, env=SERVER_ENV)
    yield server
    server.stop()


@pytest.fixture
def client(live):
    with live.client() as c:
        yield c


def _img(seed: int, shape: tuple[int, int]) -> tuple[str, bytes, str]:
    arr = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return (f"p{seed}.png", buf.getvalue(), "image/png")








def test_restyle_keeps_the_input_size_and_saves_it_with_its_facts(client):
    r = client.post("/api/restyle", data={"model": "nat", "style": "neon", "seed": "3"},
                    files={"image": _img(1, (45, 67))})
    arr, meta = _png(r)
    assert arr.shape == (45, 67, 3)
    h = r.headers
    assert (h["x-polychrome-width"], h["x-polychrome-height"]) == ("67", "45")
    assert h["x-polychrome-tiles"] == "1" and h["x-polychrome-drawn-at"] == "67x45"
    assert h["x-polychrome-size"] == "native" and meta["size"] == "native"
    info = _stored(client, r)
    assert (info["width"], info["height"]) == (67, 45)
    assert info["metadata"]["size"] == "native" and info["metadata"]["tiles"] == "1"

    again = client.post(f"/api/images/{info['id']}/regenerate")
    assert again.status_code == 200, again.text
    assert again.headers["x-polychrome-identical"] == "true"


def test_size_sets_the_long_side_and_bad_sizes_are_4xx(client):
    img = _img(2, (45, 67))
    r = client.post("/api/restyle", data={"model": "nat", "style": "ink", "size": "30"},
                    files={"image": img})
    arr, meta = _png(r)
    assert arr.shape == (20, 30, 3) and meta["size"] == "30" and meta["drawn_at"] == "30x20"
    # regenerated at the recorded size, from the kept working-size pixels
    again = client.post(f"/api/images/{r.headers['x-polychrome-image-id']}/regenerate")
    assert again.headers["x-polychrome-identical"] == "true"
    # rendered above the upload cap: the kept working-size pixels still regenerate it
    r = client.post("/api/restyle", data={"model": "nat", "style": "ink", "size": "300"},
                    files={"image": img})
    arr, meta = _png(r)
    assert arr.shape == (201, 300, 3) and int(meta["tiles"]) > 1
    again = client.post(f"/api/images/{r.headers['x-polychrome-image-id']}/regenerate")
    assert again.status_code == 200, again.text
    assert again.headers["x-polychrome-identical"] == "true"
    for bad in ("big", "4", "-1", "1.5"):
        _error(client.post("/api/restyle", data={"model": "nat", "style": "ink", "size": bad},
                           files={"image": img}), 422, "invalid_request", "size", "native")
    _error(client.post("/api/restyle", data={"model": "nat", "style": "ink", "size": "5000"},
                       files={"image": img}), 400, "too_large", "1024")
    _error(client.post("/api/mix", json={"model": "sg", "weights": {"ink": 1}, "size": "big"}),
           422, "invalid_request", "size")
    _error(client.post("/api/interpolate", json={"model": "sg", "from": "ink", "to": "neon",
                                                 "size": 0}), 422, "invalid_request", "size")


def test_mix_and_interpolate_take_the_size(client):
    img, ref = _img(3, (36, 50)), _img(4, (70, 20))
    r = client.post("/api/mix", data={"model": "nat", "weights": json.dumps({"ink": 1.0}),
                                      "seed": "1"},
                    files=[("image", img), ("reference", ref)])
    arr, meta = _png(r)
    assert arr.shape == (36, 50, 3) and meta["op"] == "mix"
    assert [c["kind"] for c in json.loads(meta["recipe"])["components"]] == ["latent",
                                                                             "reference"]
    # the reference is kept as the pipeline loads references, so this regenerates too
    again = client.post(f"/api/images/{r.headers['x-polychrome-image-id']}/regenerate")
    assert again.status_code == 200 and again.headers["x-polychrome-identical"] == "true"

    r = client.post("/api/mix", data={"model": "nat", "weights": json.dumps({"ink": 1,
                                      "pastel": 1}), "size": "25", "save": "false"},
                    files={"image": img})
    assert _png(r)[0].shape == (18, 25, 3)

    r = client.post("/api/interpolate", data={"model": "nat", "from": "ink", "to": "neon",
                                              "frames": "2", "size": "40"},
                    files={"image": img})
    assert r.status_code == 200, r.text
    assert (r.headers["x-polychrome-width"], r.headers["x-polychrome-height"]) == ("40", "29")
    with Image.open(io.BytesIO(r.content)) as gif:
        assert gif.size == (40, 29) and gif.n_frames == 2


def test_session_previews_at_most_512_and_full_renders_the_same_recipe(client):
    picture = _img(5, (40, 600))
    opened = client.post("/api/restyle/sessions", data={"model": "nat"},
                         files={"image": picture})
    assert opened.status_code == 201, opened.text
    s = opened.json()
    assert s["native"] is True and (s["width"], s["height"]) == (600, 40)
    assert (s["preview_width"], s["preview_height"]) == (512, 34) and s["max_side"] == 1024
    sid = s["session"]
    ref = client.post(f"/api/restyle/sessions/{sid}/references",
                      files={"reference": _img(6, (64, 48))}).json()["reference"]

    body = {"weights": {"neon": 0.6, ref: 0.4}, "strength": 0.7, "seed": 4}
    before = client.get("/api/images", params={"limit": 200}).json()["items"]
    preview = client.post(f"/api/restyle/sessions/{sid}/render", json={**body, "save": False})
    parr, pmeta = _png(preview)
    assert parr.shape == (34, 512, 3) and pmeta["size"] == "512" and pmeta["tiles"] == "1"
    assert client.get("/api/images", params={"limit": 200}).json()["items"] == before

    full = client.post(f"/api/restyle/sessions/{sid}/full", json=body)
    farr, fmeta = _png(full)
    assert farr.shape == (40, 600, 3)
    assert full.headers["x-polychrome-session"] == sid
    assert fmeta["recipe"] == pmeta["recipe"]  # the same codes, references, seed, strength
    assert fmeta["size"] == "native" and int(fmeta["tiles"]) > 1  # tiled above the budget
    info = _stored(client, full)
    assert (info["width"], info["height"]) == (600, 40)
    assert info["metadata"]["size"] == "native" and info["metadata"]["tiles"] == fmeta["tiles"]
    # the full-size picture was kept: the gallery image regenerates bit for bit
    again = client.post(f"/api/images/{info['id']}/regenerate")
    assert again.status_code == 200, again.text
    assert again.headers["x-polychrome-identical"] == "true"

    # the same style at the preview's size is the preview (up to the resampling of s_src)
    small = client.post(f"/api/restyle/sessions/{sid}/full",
                        json={**body, "size": 512, "save": False})
    sarr, smeta = _png(small)
    assert sarr.shape == parr.shape and smeta["recipe"] == pmeta["recipe"]
    assert np.abs(sarr.astype(int) - parr.astype(int)).mean() < 1.0

    # no style given: the session's last render, at the size asked
    client.post(f"/api/restyle/sessions/{sid}/render", json={"style": "pastel", "seed": 2,
                                                            "save": False})
    last = client.post(f"/api/restyle/sessions/{sid}/full", json={"size": "100"})
    larr, lmeta = _png(last)
    assert larr.shape == (7, 100, 3) and lmeta["style"] == "pastel" and lmeta["seed"] == "2"
    assert lmeta["size"] == "100"
    assert "x-polychrome-image-id" in last.headers

    _error(client.post(f"/api/restyle/sessions/{sid}/full", json={"size": "big"}), 422,
           "invalid_request", "size")
    _error(client.post(f"/api/restyle/sessions/{sid}/full", json={"size": 4096}), 400,
           "too_large")
    _error(client.post(f"/api/restyle/sessions/{sid}/full",
                       json={"style": "ink", "weights": {"ink": 1}}), 400, "bad_request")
    _error(client.post("/api/restyle/sessions/nope/full", json={}), 404, "unknown_session")


def test_a_fresh_session_needs_a_style_for_full(client):
    sid = client.post("/api/restyle/sessions", data={"model": "nat"},
                      files={"image": _img(7, (30, 20))}).json()["session"]
    _error(client.post(f"/api/restyle/sessions/{sid}/full", json={}), 400, "missing_style",
           "style")
    # a picture within the preview size is its own preview: native either way
    s = client.get(f"/api/restyle/sessions/{sid}").json()
    assert (s["preview_width"], s["preview_height"]) == (20, 30)
    preview = client.post(f"/api/restyle/sessions/{sid}/render", json={"style": "ink",
                                                                      "save": False})
    full = client.post(f"/api/restyle/sessions/{sid}/full", json={"style": "ink"})
    assert _png(preview)[1]["size"] == "native"
    assert np.array_equal(_png(preview)[0], _png(full)[0])


def test_whole_picture_sessions_are_unchanged(client):
    opened = client.post("/api/restyle/sessions", data={"model": "sg"},
                         files={"image": _img(8, (20, 40))}).json()
    assert opened["native"] is False and opened["preview_width"] is None
    assert (opened["width"], opened["height"]) == (40, 20)
    sid = opened["session"]
    preview = client.post(f"/api/restyle/sessions/{sid}/render",
                          json={"style": "neon", "seed": 1, "save": False})
    parr, pmeta = _png(preview)
    assert parr.shape == (8, 16, 3) and pmeta["drawn_at"] == "16x16" and pmeta["size"] == ""
    full = client.post(f"/api/restyle/sessions/{sid}/full", json={"size": 1000})
    farr, fmeta = _png(full)
    assert np.array_equal(farr, parr)  # drawn at 16 x 16 whatever the size asked
    assert full.headers["x-polychrome-drawn-at"] == "16x16"
    info = _stored(client, full)
    assert (info["width"], info["height"]) == (16, 8)
