"""Restoration over HTTP against a real `polychrome serve`: POST /api/restore for each task
(sizes, inpainting keeps every pixel outside the mask), every bad input as a clear 4xx,
the cascade (`upscale` on generate, restyle and full renders), the model listing's task
and scales, regeneration from the gallery, and pix2pix train jobs refused when their
task / scales / crop cannot make a model. Tiny untrained models: every call takes ms."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from .live import NATIVE_META, NATIVE_STARGAN, register_tiny, start_server
from .live import api_error as _error
from .live import gallery_record as _stored
from .live import png_answer as _png

P2P = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)
DCGAN = dict(resolution=16, num_domains=1, width=8, z_dim=16)
STYLES = ["ink", "neon", "pastel"]
# Results are capped at 256 px on a side: a 100 x 80 picture cannot be made 4x larger.
SERVER_ENV = {"POLYCHROME_NATIVE_MAX_SIDE": "256"}


def _dataset(home, name: str) -> None:
    """A tiny picture set in the store of `home` (for the train-job checks)."""
    from polychrome.data.synthetic import make_shapes_dataset
    from polychrome.persistence.datasets import import_dataset

    old = os.environ.get("POLYCHROME_HOME")
    os.environ["POLYCHROME_HOME"] = str(home)
    try:
        import_dataset(make_shapes_dataset(home.parent / "shapes", n=4, size=32), name)
    finally:
        if old is None:
            os.environ.pop("POLYCHROME_HOME", None)
        else:
            os.environ["POLYCHROME_HOME"] = old


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("restore") / "home"
    home.mkdir()
    # sr2 first: the default upscaler for x2 is the first registered sr model trained for it
    register_tiny(home, "pix2pix", "sr2", [], task="sr", scales=[2], **P2P)
    register_tiny(home, "pix2pix", "sr24", [], task="sr", scales=[2, 4], **P2P)
    register_tiny(home, "pix2pix", "fill", [], task="inpaint", **P2P)
    register_tiny(home, "pix2pix", "color", [], task="colorize", **P2P)
    register_tiny(home, "dcgan", "dc", [], **DCGAN)
    register_tiny(home, "stargan", "nat", STYLES, meta=NATIVE_META, **NATIVE_STARGAN)
    _dataset(home, "shapes")
    server = start_server(home, workers=0, env=SERVER_ENV)
    yield server
    server.stop()


@pytest.fixture
def client(live):
    with live.client() as c:
        yield c


def _picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _mask(h: int, w: int, box=(2, 5, 3, 9)) -> np.ndarray:
    """White (fill) inside rows box[0]:box[1], columns box[2]:box[3]; black elsewhere."""
    m = np.zeros((h, w, 3), np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = 255
    return m


def _restore(client, model: str, picture: np.ndarray | bytes, mask=None, **fields):
    files = {"image": ("pic.png", picture if isinstance(picture, bytes) else _encode(picture),
                       "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask if isinstance(mask, bytes) else _encode(mask),
                         "image/png")
    return client.post("/api/restore", data={"model": model, **fields}, files=files)








def _regenerates(client, r) -> None:
    again = client.post(f"/api/images/{r.headers['x-polychrome-image-id']}/regenerate")
    assert again.status_code == 200, again.text
    assert again.headers["x-polychrome-identical"] == "true"


# -- the three tasks ---------------------------------------------------------------------------
def test_sr_answers_the_picture_scale_times_larger_and_saves_it(client):
    pic = _picture(12, 20)
    r = _restore(client, "sr24", pic, scale="4")
    arr, meta = _png(r)
    assert arr.shape == (48, 80, 3)
    h = r.headers
    assert (h["x-polychrome-task"], h["x-polychrome-scale"]) == ("sr", "4")
    assert (h["x-polychrome-width"], h["x-polychrome-height"], h["x-polychrome-tiles"]) == (
        "80", "48", "1")
    assert meta["task"] == "sr" and meta["model"] == "sr24" and meta["version"] == "1"
    info = _stored(client, r)
    assert (info["width"], info["height"], info["model"]) == (80, 48, "sr24")
    assert info["metadata"]["scale"] == "4" and info["metadata"]["input_sha256"]
    _regenerates(client, r)

    arr, meta = _png(_restore(client, "sr24", pic, scale="2", task="sr"))
    assert arr.shape == (24, 40, 3) and meta["scale"] == "2"
    arr, meta = _png(_restore(client, "sr24", pic))  # default: the largest trained factor
    assert arr.shape == (48, 80, 3) and meta["scale"] == "4"
    r = _restore(client, "sr2", pic, save="false")  # not kept: no gallery id
    assert _png(r)[0].shape == (24, 40, 3) and "x-polychrome-image-id" not in r.headers


def test_inpaint_fills_the_mask_and_keeps_every_other_pixel(client):
    pic = _picture(20, 24, seed=1)
    mask = _mask(20, 24)
    r = _restore(client, "fill", pic, mask, task="inpaint")
    arr, meta = _png(r)
    assert arr.shape == pic.shape
    keep = mask[..., 0] == 0
    assert np.array_equal(arr[keep], pic[keep])
    assert not np.array_equal(arr[~keep], pic[~keep])  # the hole is painted, not copied
    assert r.headers["x-polychrome-task"] == "inpaint" and r.headers["x-polychrome-scale"] == "1"
    assert meta["mask_fraction"] == f"{(~keep).mean():.4f}" and meta["mask_sha256"]
    _regenerates(client, r)  # from the kept picture and mask

    # strokes on a transparent layer (what a painting canvas gives): transparent = keep
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[2:5, 3:9] = 255
    arr2, _ = _png(_restore(client, "fill", pic, _encode(rgba, "RGBA")))
    assert np.array_equal(arr2, arr)


def test_colorize_keeps_the_size_and_regenerates(client):
    pic = _picture(18, 26, seed=2)
    r = _restore(client, "color", pic)
    arr, meta = _png(r)
    assert arr.shape == pic.shape and meta["task"] == "colorize"
    assert r.headers["x-polychrome-tiles"] == "1"
    _regenerates(client, r)


# -- bad input: a clear 4xx, never a 5xx ----------------------------------------------------------
def test_every_bad_restore_request_is_a_clear_4xx(client):
    pic = _picture(12, 16)
    _error(_restore(client, "nope", pic), 404, "not_found", "nope")
    _error(_restore(client, "../etc", pic), 400, "bad_name")
    _error(_restore(client, "dc", pic), 400, "wrong_family", "restoration model")
    _error(_restore(client, "nat", pic), 400, "wrong_family")
    _error(_restore(client, "sr24", pic, task="inpaint"), 400, "wrong_task", "--task inpaint")
    _error(_restore(client, "sr24", pic, task="deblur"), 422, "invalid_request", "task")
    _error(_restore(client, "sr24", pic, scale="3"), 400, "bad_scale", "x2, x4", "not x3")
    _error(_restore(client, "sr24", pic, scale="two"), 422, "invalid_request", "scale")
    _error(_restore(client, "fill", pic, scale="2"), 400, "bad_scale")
    _error(_restore(client, "fill", pic), 400, "missing_mask", "needs a mask")
    _error(_restore(client, "fill", pic, _mask(12, 17)), 400, "bad_mask", "17x12", "16x12")
    _error(_restore(client, "fill", pic, np.zeros((12, 16, 3), np.uint8)), 400, "bad_mask",
           "empty")
    _error(_restore(client, "fill", pic, np.full((12, 16, 3), 255, np.uint8)), 400,
           "bad_mask", "whole picture")
    _error(_restore(client, "sr24", pic, _mask(12, 16)), 400, "bad_mask", "for inpainting")
    _error(_restore(client, "color", pic, _mask(12, 16)), 400, "bad_mask")
    _error(_restore(client, "sr24", _picture(80, 100), scale="4"), 400, "too_large",
           "400x320", "256")
    broken = _encode(pic)[:60]
    _error(_restore(client, "sr24", broken), 422, "corrupt", "image 'pic.png'")
    _error(_restore(client, "fill", pic, b"not a picture at all" * 4), 422, "unsupported",
           "mask 'mask.png'")
    _error(_restore(client, "sr24", b""), 422, "corrupt", "empty file")
    _error(client.post("/api/restore", data={"model": "sr24"}), 400, "missing_input", "image")
    _error(client.post("/api/restore", data={"model": "sr24"},
                       files={"picture": ("p.png", _encode(pic), "image/png")}),
           400, "bad_request", "unexpected file field")
    _error(client.post("/api/restore", json={"model": "sr24"}), 400, "missing_input")


# -- the cascade ------------------------------------------------------------------------------------
def test_generate_upscaled_keeps_the_recipe_and_regenerates(client):
    r = client.post("/api/generate", json={"model": "dc", "seed": 5, "upscale": 4})
    arr, meta = _png(r)
    assert arr.shape == (64, 64, 3)
    assert meta["upscaled_by"] == "sr24:1" and meta["upscale"] == "4"
    assert meta["model"] == "dc" and meta["seed"] == "5"  # the original recipe
    assert (r.headers["x-polychrome-width"], r.headers["x-polychrome-upscale"]) == ("64", "4")
    info = _stored(client, r)
    assert (info["width"], info["height"], info["seed"]) == (64, 64, 5)
    _regenerates(client, r)
    plain = _png(client.post("/api/generate", json={"model": "dc", "seed": 5}))[0]
    assert plain.shape == (16, 16, 3)

    # x2: the first registered sr model trained for it; or the one named
    assert _png(client.post("/api/generate", json={"model": "dc", "seed": 5, "upscale": 2})
                )[1]["upscaled_by"] == "sr2:1"
    arr, meta = _png(client.post("/api/generate", json={"model": "dc", "seed": 5, "upscale": 2,
                                                        "upscaler": "sr24"}))
    assert arr.shape == (32, 32, 3) and meta["upscaled_by"] == "sr24:1"
    many = client.post("/api/generate", json={"model": "dc", "n": 2, "seed": 1, "upscale": 2})
    assert many.status_code == 200, many.text
    assert [(im["width"], im["metadata"]["upscale"]) for im in many.json()["images"]] == [
        (32, "2"), (32, "2")]


def test_bad_upscale_requests_are_4xx(client):
    gen = {"model": "dc", "seed": 1}
    _error(client.post("/api/generate", json={**gen, "upscale": 3}), 400, "no_upscaler", "x3")
    _error(client.post("/api/generate", json={**gen, "upscale": 4, "upscaler": "sr2"}), 400,
           "bad_scale", "x2", "not x4")
    _error(client.post("/api/generate", json={**gen, "upscale": 2, "upscaler": "fill"}), 400,
           "wrong_task", "super-resolution")
    _error(client.post("/api/generate", json={**gen, "upscale": 2, "upscaler": "dc"}), 400,
           "wrong_family")
    _error(client.post("/api/generate", json={**gen, "upscale": 2, "upscaler": "nope"}), 404,
           "not_found")
    _error(client.post("/api/generate", json={**gen, "upscaler": "sr24"}), 400, "bad_scale",
           "upscale=2 or 4")
    _error(client.post("/api/generate", json={**gen, "upscale": 1}), 422, "invalid_request")
    r = client.post("/api/restyle", data={"model": "nat", "style": "ink", "upscale": "4",
                                          "size": "100"},
                    files={"image": ("p.png", _encode(_picture(40, 50)), "image/png")})
    _error(r, 400, "too_large", "256")


def test_restyle_and_full_renders_upscaled(client):
    pic = _encode(_picture(12, 20, seed=3))
    r = client.post("/api/restyle", data={"model": "nat", "style": "neon", "seed": "2",
                                          "upscale": "2"},
                    files={"image": ("p.png", pic, "image/png")})
    arr, meta = _png(r)
    assert arr.shape == (24, 40, 3)
    assert meta["op"] == "restyle" and meta["style"] == "neon" and meta["upscaled_by"] == "sr2:1"
    assert r.headers["x-polychrome-upscale"] == "2"
    _regenerates(client, r)

    s = client.post("/api/restyle/sessions", data={"model": "nat"},
                    files={"image": ("p.png", pic, "image/png")})
    assert s.status_code == 201, s.text
    sid = s.json()["session"]
    r = client.post(f"/api/restyle/sessions/{sid}/full",
                    json={"style": "ink", "upscale": 4, "upscaler": "sr24"})
    arr, meta = _png(r)
    assert arr.shape == (48, 80, 3) and meta["upscaled_by"] == "sr24:1"
    assert r.headers["x-polychrome-session"] == sid
    _error(client.post(f"/api/restyle/sessions/{sid}/full", json={"style": "ink",
                                                                  "upscale": 4,
                                                                  "upscaler": "color"}),
           400, "wrong_task")
    _error(client.post(f"/api/restyle/sessions/{sid}/render",
                       json={"style": "ink", "upscale": 2}), 422, "invalid_request")


# -- listing and training ----------------------------------------------------------------------------
def test_model_listing_gives_task_and_scales(client):
    items = {m["name"]: m for m in client.get("/api/models").json()["items"]}
    assert (items["sr24"]["family"], items["sr24"]["task"], items["sr24"]["scales"]) == (
        "restoration", "sr", [2, 4])
    assert (items["fill"]["task"], items["fill"]["scales"]) == ("inpaint", [1])
    assert (items["color"]["task"], items["sr2"]["scales"]) == ("colorize", [2])
    assert (items["dc"]["task"], items["dc"]["scales"]) == (None, [])
    archs = {a["name"]: a["family"] for a in client.get("/api/architectures").json()["items"]}
    assert archs["pix2pix"] == "restoration"


def test_pix2pix_train_jobs_check_task_scales_and_crop(client):
    def job(config: dict, model: str = "pix2pix", **top) -> dict:
        return {"kind": "train", "model": model, "dataset": "shapes", "steps": 5,
                "config": config, **top}

    ok = client.post("/api/jobs", json=job({"crop": 32, "model_config": {
        "task": "sr", "scales": [2, 4], "n_down": 2}}))
    assert ok.status_code == 202, ok.text
    cfg = ok.json()["params"]["config"]
    assert cfg["model_config"] == {"task": "sr", "scales": [2, 4], "n_down": 2}
    assert cfg["crop"] == 32
    assert client.post("/api/jobs", json=job({"crop": 64, "model_config": {
        "task": "inpaint"}})).status_code == 202

    for config, code, words in (
        ({"crop": 64, "model_config": {"task": "deblur"}}, "bad_config", ("task",)),
        ({"crop": 64, "model_config": {"task": "sr", "scales": [3]}}, "bad_config",
         ("not a multiple",)),
        ({"crop": 64, "model_config": {"task": "sr", "scales": [5]}}, "bad_config",
         ("2, 3, 4, 8",)),
        ({"crop": 64, "model_config": {"task": "inpaint", "scales": [2]}}, "bad_config",
         ("does not change the size",)),
        ({"crop": 16, "model_config": {"task": "sr", "scales": [4]}}, "bad_config",
         ("too deep",)),
        ({"crop": 48, "model_config": {"task": "colorize"}}, "bad_config", ("power of two",)),
        ({"crop": 64, "model_config": {"task": "sr", "scales": ["2"]}}, "bad_config",
         ("integers",)),
        ({"crop": 64, "model_config": {"task": "sr", "resolution": 32}}, "config_error",
         ("disagrees",)),
    ):
        _error(client.post("/api/jobs", json=job(config)), 400, code, *words)
    _error(client.post("/api/jobs", json=job({"model_config": {"task": "sr"}}, model="dcgan")),
           400, "config_error", "restoration models")
    # the time estimate takes the same overrides and refuses the same combinations up front
    est = {"model": "pix2pix", "dataset": "shapes", "preset": "quick"}
    _error(client.post("/api/presets/estimate", json={**est, "config": {
        "crop": 64, "model_config": {"task": "sr", "scales": [5]}}}), 400, "bad_config")
    _error(client.post("/api/presets/estimate", json={**est, "config": {"steps": 3}}), 400,
           "config_error", "top-level")
