"""Bundled default models: indexed in place on first use, once, and usable by name."""

from __future__ import annotations

import json

import pytest
from tests.pipelines.stylehelpers import STYLES, save_tiny
from tests.pipelines.test_native_size import save_native

from polychrome.cli.main import main
from polychrome.persistence import bundled
from polychrome.persistence import models as store

pytestmark = pytest.mark.database  # on SQLite and on PostgreSQL


@pytest.fixture
def bundled_root(tmp_path, monkeypatch):
    root = tmp_path / "assets" / "models"
    save_tiny("stargan", root / "tiny-translator")
    save_tiny("stylegan", root / "tiny-sampler")
    save_native("stargan", root / "tiny-photo")
    from tests.restoration.test_restore_cli import save_tiny as save_restorer

    save_restorer("sr", root / "tiny-sr", scales=[2, 4])
    save_restorer("inpaint", root / "tiny-inpaint")
    save_restorer("colorize", root / "tiny-colorize")
    (root / "tiny-sampler" / "metrics.json").write_text(json.dumps({"fid": 12.5}))
    monkeypatch.setenv("POLYCHROME_BUNDLED_MODELS", "1")
    monkeypatch.setattr(bundled, "BUNDLED_ROOT", root)
    monkeypatch.setattr(bundled, "_done_for", set())
    return root


def test_bundled_models_are_registered_in_place_once(bundled_root):
    names = {m["name"]: m for m in store.list_models_registered()}
    assert set(names) == {"tiny-translator", "tiny-sampler", "tiny-photo", "tiny-sr",
                          "tiny-inpaint", "tiny-colorize"}
    assert names["tiny-sampler"]["bundled"] and names["tiny-sampler"]["metrics"]["fid"] == 12.5
    ref = store.resolve_model("tiny-translator")
    assert ref.path == (bundled_root / "tiny-translator").resolve()
    # A second process (fresh guard) does not index them twice.
    bundled._done_for.clear()
    store.list_models_registered()
    assert [v["version"] for v in store.show_model("tiny-sampler")["versions"]] == [1]
    # Nothing was copied into the home: the weights stay where they ship.
    assert not list(store.get_settings().models_dir.glob("tiny-*"))


def test_broken_bundled_model_is_skipped_not_fatal(bundled_root):
    (bundled_root / "tiny-sampler" / "model.safetensors").write_bytes(b"not safetensors")
    names = {m["name"] for m in store.list_models_registered()}
    assert names == {"tiny-translator", "tiny-photo", "tiny-sr", "tiny-inpaint",
                     "tiny-colorize"}


def test_demo_writes_the_showcase(bundled_root, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "-o", str(out), "--translator", "tiny-translator",
               "--sampler", "tiny-sampler", "--photo-model", "tiny-photo",
               "--sr-model", "tiny-sr", "--inpaint-model", "tiny-inpaint",
               "--colorize-model", "tiny-colorize", "--upscaler", "tiny-sr", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    names = sorted(p.rsplit("/", 1)[-1] for p in result["files"])
    assert names == sorted(["README.txt", "blend.png", "interpolation.gif", "restyle.png",
                            "sampler-blend.png", "samples.png", "photo-styles.png",
                            *[f"photo-{s}.png" for s in STYLES], "samples-x4.png",
                            "restore-sr-x4.png", "restore-inpaint.png",
                            "restore-colorize.png"])
    for f in result["files"]:
        assert (out / f.rsplit("/", 1)[-1]).stat().st_size > 0
    from polychrome.imageio import decode_image
    from polychrome.pipelines.showcase import example_pictures

    photo = decode_image(example_pictures("photo")[0])
    for s in STYLES:  # the example photo comes back at its own size in every style
        assert decode_image(out / f"photo-{s}.png").shape == photo.shape


def test_demo_with_missing_default_model_is_a_one_line_error(bundled_root, tmp_path, capsys):
    rc = main(["demo", "-o", str(tmp_path / "d"), "--translator", "nope",
               "--photo-model", "tiny-photo", "--no-restore"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
