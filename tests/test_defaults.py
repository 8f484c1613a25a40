"""The main job out of the box: `polychrome serve` on an empty home serves the bundled
default models, and the generation routes work at once (offline, CPU)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from tests.serving.live import start_server

from polychrome.imageio import read_png_metadata
from polychrome.persistence.bundled import bundled_model_dirs
from polychrome.pipelines.showcase import example_pictures

DEFAULTS = {"emoji-stargan": "translation", "emoji-stylegan": "noise"}
RESTORERS = {"photo-sr": "sr", "photo-inpaint": "inpaint", "photo-colorize": "colorize",
             "emoji-sr": "sr"}


def test_the_defaults_ship_with_the_package():
    shipped = dict(bundled_model_dirs())
    assert set(DEFAULTS) <= set(shipped), f"bundled models missing: {sorted(shipped)}"
    assert set(RESTORERS) <= set(shipped), f"restoration models missing: {sorted(shipped)}"
    photo_mb = sum(p.stat().st_size for n in ("photo-sr", "photo-inpaint", "photo-colorize")
                   for p in shipped[n].iterdir()) / 1e6
    assert photo_mb <= 20.0, f"the photo restoration models take {photo_mb:.1f} MB"
    for name in [*DEFAULTS, *RESTORERS]:
        files = {p.name for p in shipped[name].iterdir()}
        assert {"config.json", "model.safetensors", "card.md", "metrics.json"} <= files
    assert example_pictures("source") and example_pictures("reference")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("fresh-home")
    srv = start_server(home, workers=0, env={"POLYCHROME_BUNDLED_MODELS": "1"})
    yield srv
    srv.stop()


def _png(resp) -> tuple[Image.Image, dict]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(resp.content)), read_png_metadata(resp.content)


def test_empty_home_serves_the_defaults(server):
    with server.client() as c:
        models = {m["name"]: m for m in c.get("/api/models").json()["items"]}
        for name, family in DEFAULTS.items():
            assert models[name]["family"] == family and models[name]["bundled"]
            assert len(models[name]["styles"]) == 5
        assert c.get("/").status_code == 200  # the page


def test_generate_restyle_mix_work_immediately(server):
    source = example_pictures("source")[0].read_bytes()
    reference = example_pictures("reference")[0].read_bytes()
    with server.client() as c:
        img, meta = _png(c.post("/api/generate", json={
            "model": "emoji-stylegan", "n": 1, "seed": 5, "style": "noto"}))
        assert meta["model"] == "emoji-stylegan" and meta["style"] == "noto"
        img, meta = _png(c.post("/api/restyle", data={
            "model": "emoji-stargan", "style": "openmoji-line", "seed": "1"},
            files={"image": ("in.png", source, "image/png")}))
        assert img.size[0] == img.size[1] > 0
        _png(c.post("/api/restyle", data={"model": "emoji-stargan"}, files={
            "image": ("in.png", source, "image/png"),
            "reference": ("ref.png", reference, "image/png")}))
        _png(c.post("/api/mix", json={"model": "emoji-stylegan", "seed": 2,
                                      "weights": {"noto": 0.5, "twemoji": 0.5}}))


def test_restoration_works_immediately(server):
    """The bundled restoration models on a fresh home: sr x4, inpaint, colorize through the
    API, and a 32 px emoji enlarged to 128 px in the same generate call (emoji-sr chosen)."""
    import numpy as np

    photo = Image.open(example_pictures("photo")[0]).convert("RGB")
    small = photo.resize((80, 60))
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    mask = np.zeros((60, 80), np.uint8)
    mask[20:35, 30:50] = 255
    mbuf = io.BytesIO()
    Image.fromarray(mask).save(mbuf, format="PNG")
    with server.client() as c:
        models = {m["name"]: m for m in c.get("/api/models").json()["items"]}
        for name, task in RESTORERS.items():
            assert models[name]["family"] == "restoration" and models[name]["task"] == task
        img, meta = _png(c.post("/api/restore", data={"model": "photo-sr", "scale": "4"},
                                files={"image": ("p.png", buf.getvalue(), "image/png")}))
        assert img.size == (320, 240) and meta["task"] == "sr"
        img, _ = _png(c.post("/api/restore", data={"model": "photo-inpaint"}, files={
            "image": ("p.png", buf.getvalue(), "image/png"),
            "mask": ("m.png", mbuf.getvalue(), "image/png")}))
        out = np.asarray(img.convert("RGB"))
        assert img.size == (80, 60)
        assert np.array_equal(out[mask == 0], np.asarray(small)[mask == 0])
        img, _ = _png(c.post("/api/restore", data={"model": "photo-colorize"},
                             files={"image": ("p.png", buf.getvalue(), "image/png")}))
        assert img.size == (80, 60)
        img, meta = _png(c.post("/api/generate", json={
            "model": "emoji-stylegan", "n": 1, "seed": 5, "style": "noto", "upscale": 4}))
        assert img.size == (128, 128) and meta["upscaled_by"].startswith("emoji-sr")
