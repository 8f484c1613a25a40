"""Gallery rows and files, the serve settings (env and config file), the rate-limit bucket."""

from __future__ import annotations

import numpy as np
import pytest

from polychrome.errors import NotFound
from polychrome.imageio import encode_png, read_png_metadata
from polychrome.persistence import gallery
from polychrome.serving.security import TokenBucket
from polychrome.settings import Settings, get_settings

pytestmark = pytest.mark.database  # on SQLite and on PostgreSQL


def _add(model: str, style: str, seed: int) -> dict:
    meta = {"model": model, "version": "2", "style": style, "seed": str(seed),
            "truncation": "0.7"}
    png = encode_png(np.full((8, 8, 3), seed % 255, np.uint8), meta)
    return gallery.add_image(png, meta, width=8, height=8)


def test_gallery_pages_filters_and_deletes(polychrome_home):
    ids = [_add("m", "ink" if i % 2 else "paint", i)["id"] for i in range(5)]
    _add("other", "ink", 99)
    page = gallery.list_images(limit=2, model="m")
    assert [im["id"] for im in page["items"]] == ids[::-1][:2]
    page2 = gallery.list_images(limit=10, model="m", cursor=page["next_cursor"])
    assert [im["id"] for im in page2["items"]] == ids[::-1][2:] and page2["next_cursor"] is None
    assert [im["id"] for im in gallery.list_images(offset=1, limit=1, model="m")["items"]] == \
        [ids[3]]
    inks = gallery.list_images(style="ink", model="m")["items"]
    assert {im["seed"] for im in inks} == {1, 3}
    info = gallery.get_image(ids[0])
    assert info["model_version"] == 2 and info["truncation"] == 0.7
    path = gallery.image_path(ids[0])
    assert path.parent == polychrome_home / "gallery"
    assert read_png_metadata(path)["seed"] == "0"
    gallery.delete_image(ids[0])
    assert not path.exists()
    with pytest.raises(NotFound):
        gallery.get_image(ids[0])


def test_serve_settings_from_env_and_config_file(polychrome_home, monkeypatch):
    (polychrome_home / "config.toml").write_text(
        'queue_max = 7\napi_keys = ["a", "b"]\nbatch_wait_ms = 2.5\nport = 9000\n')
    s = Settings()
    assert s.queue_max == 7 and s.api_key_set == {"a", "b"} and s.batch_wait_ms == 2.5
    monkeypatch.setenv("POLYCHROME_PORT", "9100")  # the environment wins over the file
    monkeypatch.setenv("POLYCHROME_API_KEYS", "x, y,")
    s = Settings()
    assert s.port == 9100 and s.api_key_set == {"x", "y"} and s.queue_max == 7
    assert get_settings().host == "127.0.0.1"  # loopback by default


def test_yaml_config_file(polychrome_home):
    (polychrome_home / "config.yaml").write_text("rate_limit: 12\npipeline_cache_size: 2\n")
    s = Settings()
    assert s.rate_limit == 12 and s.pipeline_cache_size == 2


def test_token_bucket_allows_a_burst_then_waits():
    bucket = TokenBucket(per_minute=3)
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take("k")
    assert 0 < wait <= 20.0
    assert bucket.take("other") == 0.0
