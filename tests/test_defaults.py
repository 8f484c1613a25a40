"""The main job out of the box: `polychrome serve` on an empty home serves the bundled
default models, and the generation routes work at once (offline, CPU)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from tests.serving.live import start_server

from polychrome.imageio import read_png_metadata
from polychrome.models.bundled import bundled_model_dirs
from polychrome.pipelines.showcase import example_pictures

DEFAULTS = {"emoji-stargan": "translation", "emoji-stylegan": "noise"}


def test_the_defaults_ship_with_the_package():
    shipped = dict(bundled_model_dirs())
    assert set(DEFAULTS) <= set(shipped), f"bundled models missing: {sorted(shipped)}"
    for name in DEFAULTS:
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
