"""The style routes against a real `polychrome serve`: restyle, mix, interpolate, live
sessions and regenerate, with tiny untrained models registered in the store."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from polychrome.imageio import decode_image

from .live import png_answer as _png
from .live import png_bytes, register_tiny, start_server

STYLES = ["ink", "neon", "pastel"]
STARGAN = dict(resolution=16, num_domains=3, width=8, max_width=16, style_dim=8, latent_dim=4,
               mapping_dim=16, mapping_shared_layers=2, mapping_head_layers=2, e_width=8,
               e_max_width=16, d_width=8, d_max_width=16)
DCGAN = dict(resolution=16, num_domains=3, width=8, z_dim=16)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("style") / "home"
    home.mkdir()
    register_tiny(home, "stargan", "sg", STYLES, **STARGAN)
    register_tiny(home, "dcgan", "dc", STYLES, **DCGAN)
    server = start_server(home, workers=0)
    yield server
    server.stop()


@pytest.fixture
def client(live):
    with live.client() as c:
        yield c


def _img(seed: int, size: tuple[int, int] = (20, 24)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()




def _assert_error(r, status: int, code: str | None = None, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    if code is not None:
        assert err["code"] == code, err
    for w in words:
        assert w in err["message"], err
    return err


def _gallery_ids(client) -> list[int]:
    return [i["id"] for i in client.get("/api/images", params={"limit": 200}).json()["items"]]


# -- restyle ----------------------------------------------------------------------------------
def test_restyle_one_png_with_metadata_in_gallery(client):
    r = client.post("/api/restyle", data={"model": "sg", "style": "neon", "seed": "5",
                                          "strength": "0.5"},
                    files={"image": ("cat.png", _img(1), "image/png")})
    arr, meta = _png(r)
    # a whole-picture model draws at 16 x 16 and gives it back at the input's 24 x 20 aspect
    assert arr.shape == (13, 16, 3) and meta["drawn_at"] == "16x16"
    assert meta["model"] == "sg" and meta["version"] == "1" and meta["op"] == "restyle"
    assert meta["style"] == "neon" and meta["seed"] == "5" and meta["strength"] == "0.5"
    assert json.loads(meta["recipe"])["components"][0] == {"kind": "latent", "style": "neon",
                                                           "seed": 5}
    image_id = int(r.headers["x-polychrome-image-id"])
    assert image_id in _gallery_ids(client)
    stored = client.get(f"/api/images/{image_id}.png")
    assert stored.content == r.content  # the gallery holds exactly what was answered
    info = client.get(f"/api/images/{image_id}").json()
    assert info["model"] == "sg" and info["style"] == "neon"


def test_restyle_variations_answer_json_with_gallery_urls(client):
    r = client.post("/api/restyle", data={"model": "sg", "style": "ink", "seed": "10",
                                          "variations": "3"},
                    files={"image": ("a.png", _img(2), "image/png")})
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert [im["seed"] for im in images] == [10, 11, 12]
    arrays = []
    for im in images:
        arr, meta = _png(client.get(im["url"]))
        assert meta["seed"] == str(im["seed"]) and meta["op"] == "restyle"
        arrays.append(arr)
    assert not np.array_equal(arrays[0], arrays[1])  # different seeds, different styles
    # the variations ran as one batch: each equals its one-at-a-time render (regenerate)
    # within float tolerance
    for im, arr in zip(images, arrays, strict=True):
        again, _ = _png(client.post(f"/api/images/{im['id']}/regenerate"))
        assert np.abs(again.astype(np.int16) - arr.astype(np.int16)).max() <= 1


def test_restyle_with_reference_picture(client):
    r = client.post("/api/restyle", data={"model": "sg", "reference_style": "pastel",
                                          "seed": "0"},
                    files={"image": ("a.png", _img(3), "image/png"),
                           "reference": ("ref.png", _img(4, (32, 32)), "image/png")})
    _, meta = _png(r)
    comp = json.loads(meta["recipe"])["components"][0]
    assert comp["kind"] == "reference" and comp["style"] == "pastel"
    assert meta["reference_sha256s"] == comp["sha256"]
    assert meta["style"].startswith("ref:")


# -- sessions ---------------------------------------------------------------------------------
def test_session_render_equals_full_restyle_and_only_saved_renders_enter_gallery(client):
    picture = _img(5)
    opened = client.post("/api/restyle/sessions", data={"model": "sg"},
                         files={"image": ("p.png", picture, "image/png")})
    assert opened.status_code == 201, opened.text
    s = opened.json()
    assert s["model"] == "sg:1" and s["styles"] == STYLES and s["resolution"] == 16
    sid = s["session"]
    # The same picture again reuses the session (its content is already encoded).
    again = client.post("/api/restyle/sessions", data={"model": "sg"},
                        files={"image": ("p.png", picture, "image/png")})
    assert again.json()["session"] == sid

    before = _gallery_ids(client)
    preview = client.post(f"/api/restyle/sessions/{sid}/render",
                          json={"style": "pastel", "strength": 0.7, "seed": 9, "save": False})
    arr, meta = _png(preview)
    assert meta["source_sha256"] == s["source_sha256"] and meta["strength"] == "0.7"
    assert _gallery_ids(client) == before  # live previews do not flood the gallery

    full = client.post("/api/restyle", data={"model": "sg", "style": "pastel", "seed": "9",
                                             "strength": "0.7"},
                       files={"image": ("p.png", picture, "image/png")})
    full_arr, full_meta = _png(full)
    assert np.array_equal(arr, full_arr)  # the cached path renders the very same pixels
    assert full_meta["recipe"] == meta["recipe"]

    saved = client.post(f"/api/restyle/sessions/{sid}/render",
                        json={"weights": {"ink": 1, "neon": 3}, "seed": 2})
    _, meta = _png(saved)
    assert meta["op"] == "mix" and json.loads(meta["recipe"])["weights"] == [0.25, 0.75]
    assert int(saved.headers["x-polychrome-image-id"]) in _gallery_ids(client)

    ref = client.post(f"/api/restyle/sessions/{sid}/references",
                      files={"reference": ("r.png", _img(6), "image/png")})
    assert ref.status_code == 201, ref.text
    rid = ref.json()["reference"]
    assert rid.startswith("ref:") and client.get(f"/api/restyle/sessions/{sid}").json()[
        "references"] == [rid]
    blend = client.post(f"/api/restyle/sessions/{sid}/render",
                        json={"weights": {"ink": 0.5, rid: 0.5}, "reference_style": "neon",
                              "save": False})
    _, meta = _png(blend)
    kinds = [c["kind"] for c in json.loads(meta["recipe"])["components"]]
    assert kinds == ["latent", "reference"]

    assert client.delete(f"/api/restyle/sessions/{sid}").status_code == 204
    _assert_error(client.post(f"/api/restyle/sessions/{sid}/render", json={"style": "ink"}),
                  404, "unknown_session", "upload the picture again")


# -- mix and interpolate ------------------------------------------------------------------------
def test_mix_json_on_a_noise_model_and_multipart_on_a_translator(client):
    r = client.post("/api/mix", json={"model": "dc", "weights": {"ink": 0.3, "neon": 0.7},
                                      "seed": 4})
    arr, meta = _png(r)
    assert arr.shape == (16, 16, 3) and meta["op"] == "mix" and meta["model"] == "dc"
    assert json.loads(meta["recipe"])["weights"] == [0.3, 0.7]

    r = client.post("/api/mix", data={"model": "sg", "weights": json.dumps({"ink": 1.0}),
                                      "reference_weights": "1", "seed": "1"},
                    files=[("image", ("a.png", _img(7), "image/png")),
                           ("reference", ("r.png", _img(8), "image/png"))])
    _, meta = _png(r)
    recipe = json.loads(meta["recipe"])
    assert [c["kind"] for c in recipe["components"]] == ["latent", "reference"]
    assert recipe["weights"] == [0.5, 0.5]


def test_interpolate_answers_a_gif(client):
    r = client.post("/api/interpolate", json={"model": "dc", "from": "ink", "to": "pastel",
                                              "frames": 4, "seed": 3, "scale": 2})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(r.content)) as gif:
        assert gif.size == (32, 32) and gif.n_frames == 4
        comment = json.loads(gif.info["comment"])
    assert comment["from"]["style"] == "ink" and comment["to"]["style"] == "pastel"

    r = client.post("/api/interpolate", data={"model": "sg", "from": "ink", "frames": "3"},
                    files={"image": ("a.png", _img(9), "image/png"),
                           "to_reference": ("r.png", _img(10), "image/png")})
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as gif:
        assert gif.n_frames >= 2


# -- regenerate ---------------------------------------------------------------------------------
def test_regenerate_gallery_images_bit_for_bit(client):
    restyled = client.post("/api/restyle", data={"model": "sg", "style": "ink", "seed": "77",
                                                 "strength": "0.8"},
                           files={"image": ("a.png", _img(11), "image/png"),
                                  })
    rid = restyled.headers["x-polychrome-image-id"]
    again = client.post(f"/api/images/{rid}/regenerate")
    assert again.status_code == 200, again.text
    assert again.headers["x-polychrome-identical"] == "true"
    assert np.array_equal(decode_image(again.content), decode_image(restyled.content))

    gen = client.post("/api/generate", json={"model": "dc", "seed": 3, "style": "neon"})
    gid = gen.headers["x-polychrome-image-id"]
    again = client.post(f"/api/images/{gid}/regenerate")
    assert again.status_code == 200 and again.headers["x-polychrome-identical"] == "true"
    _assert_error(client.post("/api/images/999999/regenerate"), 404, "not_found")


# -- mistakes: 4xx with a reason, never 5xx -------------------------------------------------------
def test_bad_inputs_are_clear_4xx(client):
    img = ("a.png", _img(12), "image/png")
    corrupt = png_bytes()[:60]
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "ink"},
                              files={"image": ("bad.png", corrupt, "image/png")}),
                  422, "corrupt", "image 'bad.png'")
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "ink"},
                              files={"image": ("notes.txt", b"hello world" * 10, "text/plain")}),
                  422, "unsupported", "notes.txt")
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "ink"},
                              files={"image": ("empty.png", b"", "image/png")}), 422, "corrupt")
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "ink"},
                              files={"reference": img}), 400, "missing_input", "'image'")
    _assert_error(client.post("/api/restyle", data={"model": "nope", "style": "ink"},
                              files={"image": img}), 404, "not_found")
    err = _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "sepia"},
                                    files={"image": img}), 400, "unknown_style")
    assert all(s in err["message"] for s in STYLES)
    # A style is never a server path (the CLI's "path to a reference picture" form).
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "/etc/hostname"},
                              files={"image": img}), 400, "unknown_style")
    _assert_error(client.post("/api/restyle", data={"model": "dc", "style": "ink"},
                              files={"image": img}), 400, "wrong_family")
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "ink",
                                                    "strength": "2"}, files={"image": img}),
                  422, "invalid_request", "strength")
    _assert_error(client.post("/api/restyle", data={"model": "sg", "style": "ink",
                                                    "colour": "red"}, files={"image": img}),
                  422, "invalid_request", "colour")
    _assert_error(client.post("/api/restyle", data={"model": "sg", "variations": "2"},
                              files={"image": img, "reference": img}), 400, "bad_request",
                  "variations")
    _assert_error(client.post("/api/restyle", json={"model": "sg"}), 400, "missing_input")
    _assert_error(client.post("/api/restyle", content=b"x", headers={"content-type":
                                                                     "text/plain"}),
                  400, "unsupported_media_type")
    _assert_error(client.post("/api/mix", content=b"{not json",
                              headers={"content-type": "application/json"}), 400, "bad_request",
                  "not valid JSON")
    _assert_error(client.post("/api/mix", json={"model": "dc"}), 400, "missing_style")
    _assert_error(client.post("/api/mix", json={"model": "dc", "weights": {"ink": -1}}),
                  400, "bad_weight")
    _assert_error(client.post("/api/mix", json={"model": "sg", "weights": {"ink": 1}}),
                  400, "missing_input")
    _assert_error(client.post("/api/interpolate", json={"model": "dc", "from": "ink"}),
                  400, "missing_style", "to")
    _assert_error(client.post("/api/interpolate", json={"model": "dc", "from": "ink",
                                                        "to": "neon", "frames": 1}),
                  422, "invalid_request", "frames")
    _assert_error(client.post("/api/restyle/sessions", data={"model": "dc"},
                              files={"image": img}), 400, "wrong_family")
    _assert_error(client.post("/api/restyle/sessions/nope/render", json={"style": "ink"}),
                  404, "unknown_session")
    sid = client.post("/api/restyle/sessions", data={"model": "sg"},
                      files={"image": img}).json()["session"]
    _assert_error(client.post(f"/api/restyle/sessions/{sid}/render", json={}), 400,
                  "missing_style")
    _assert_error(client.post(f"/api/restyle/sessions/{sid}/render",
                              json={"style": "ref:" + "0" * 64}), 400, "unknown_style")
    _assert_error(client.post(f"/api/restyle/sessions/{sid}/references",
                              files={"reference": ("x.gif", b"GIF89a" + b"\0" * 20,
                                                   "image/gif")}), 422)
