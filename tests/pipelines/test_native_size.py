"""Pictures at their own size: crops-mode models give back exactly W x H, tiled or whole."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polychrome.cli.main import main
from polychrome.errors import PolychromeError
from polychrome.imageio import decode_image, read_png_metadata
from polychrome.persistence.models import load_model
from polychrome.pipelines.animate import interpolate
from polychrome.pipelines.style import Restyler, mix, regenerate_style, restyle
from polychrome.settings import get_settings

from .stylehelpers import picture, tiny, write_picture

pytestmark = pytest.mark.usefixtures("one_thread")


def save_native(arch: str, directory: Path) -> Path:
    """A tiny model as crops-mode training exports it (fit crops, crop side, scale range)."""
    model = tiny(arch)
    meta = {**model.meta, "fit": "crops", "crop": 16, "scale": [16, 48]}
    if arch == "stargan":  # reach small enough for tiles of a few dozen pixels
        model = type(model)(type(model.config).from_dict({**model.config.to_dict(),
                                                          "enc_blocks": 1, "dec_blocks": 1}))
        model.eval()
    model.save_pretrained(directory, modules=model.inference_modules, meta=meta)
    return directory


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory) -> Path:
    return save_native("stargan", tmp_path_factory.mktemp("models") / "native-star")


@pytest.fixture
def native(native_dir):
    return load_model(str(native_dir))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("shape", [(37, 53), (64, 16), (9, 11), (1, 1), (40, 40)])
def test_odd_sizes_and_aspects_come_back_exactly(native, shape):
    img = picture(0, shape)
    out = restyle(native, [img], style="neon", seed=1)[0]
    assert out.array.shape == (*shape, 3)
    meta = out.metadata
    assert (meta["width"], meta["height"]) == (str(shape[1]), str(shape[0]))
    assert meta["size"] == "native" and meta["drawn_at"] == f"{shape[1]}x{shape[0]}"


def test_blend_reference_and_interpolate_keep_the_size(native):
    img, ref = picture(0, (30, 50)), picture(1, (70, 20))
    assert restyle(native, [img], reference=ref)[0].array.shape == (30, 50, 3)
    blend = mix(native, [("ink", 0.3), ("neon", 0.7)], source=img)
    assert blend.array.shape == (30, 50, 3)
    frames = interpolate(native, "ink", "pastel", source=img, frames=3)
    assert [f.array.shape for f in frames] == [(30, 50, 3)] * 3


def test_size_option_sets_the_long_side(native):
    img = picture(0, (30, 60))
    out = restyle(native, [img], style="ink", size=24)[0]
    assert out.array.shape == (12, 24, 3) and out.metadata["size"] == "24"
    with pytest.raises(PolychromeError, match="size"):
        restyle(native, [img], style="ink", size="huge")
    with pytest.raises(PolychromeError, match="cap"):
        restyle(native, [img], style="ink", size=get_settings().native_max_side + 1)


def test_cached_switching_equals_a_plain_forward(native):
    """The cached content path (encode once, decode per style) is the padded whole forward."""
    from polychrome.pipelines.tiling import run_image_model

    img = picture(3, (21, 35))
    r = Restyler(native)
    r.set_image(img)
    out = r.render("pastel", seed=2)
    with torch.inference_mode():
        s = native.style_from_latent(native.sample_z(1, generator=torch.Generator()
                                                     .manual_seed(2)), 2)
        x = r.source.tensor("cpu")
        want, info = run_image_model(lambda t: native.generator(t, s), x, multiple=4)
    from polychrome.imageio import from_tensor
    assert info["tiles"] == 1
    assert np.array_equal(from_tensor(want[0]), out.array)


def test_tiled_matches_whole_within_40db(native, monkeypatch):
    img = picture(4, (96, 120))
    whole = restyle(native, [img], style="neon", seed=5)[0]
    assert whole.metadata["tiles"] == "1"
    monkeypatch.setenv("POLYCHROME_TILE_MAX_PIXELS", "1024")
    monkeypatch.setenv("POLYCHROME_TILE_SIDE", "48")
    tiled = restyle(native, [img], style="neon", seed=5)[0]
    assert int(tiled.metadata["tiles"]) > 1
    assert tiled.array.shape == whole.array.shape
    assert _psnr(tiled.array, whole.array) >= 40.0


def test_regenerate_native_image(native, native_dir, tmp_path):
    img = picture(5, (33, 45))
    out = restyle(native, [img], style="pastel", seed=4, size=40)[0]
    again = regenerate_style(out.metadata, out_source(native, img, 40), model=native)
    assert np.array_equal(again.array, out.array)


def out_source(model, img, size):
    r = Restyler(model, size=size)
    return r.set_image(img).array  # the working-size pixels the gallery keeps


def test_whole_models_give_back_the_aspect(tmp_path):
    from .stylehelpers import save_tiny

    model = load_model(str(save_tiny("stargan", tmp_path / "whole")))
    out = restyle(model, [picture(0, (20, 40))], style="ink")[0]
    assert out.array.shape == (8, 16, 3)  # drawn at 16 x 16, given back at 2:1
    assert out.metadata["drawn_at"] == "16x16" and out.metadata["size"] == ""


def test_cyclegan_native(tmp_path):
    model = load_model(str(save_native("cyclegan", tmp_path / "cg")))
    out = restyle(model, [picture(0, (27, 31))], style="neon")[0]
    assert out.array.shape == (27, 31, 3)


def test_cli_restyle_writes_the_input_size(native_dir, tmp_path, capsys):
    src = write_picture(tmp_path / "photo.png", 0, (45, 67))
    out = tmp_path / "out.png"
    rc = main(["restyle", str(native_dir), str(src), "--style", "neon", "-o", str(out),
               "--json"])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert rc == 0 and len(lines) == 1
    res = json.loads(lines[0])
    assert (res["width"], res["height"], res["tiles"]) == (67, 45, 1)
    assert res["seconds"] >= 0 and res["images"] == [str(out)]
    assert decode_image(out).shape == (45, 67, 3)
    assert read_png_metadata(out)["size"] == "native"
    rc = main(["restyle", str(native_dir), str(src), "--style", "neon", "--size", "30",
               "-o", str(tmp_path / "small.png"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and (res["width"], res["height"]) == (30, 20)
    rc = main(["restyle", str(native_dir), str(src), "--style", "neon", "--size", "0",
               "-o", str(tmp_path / "bad.png")])
    assert rc != 0 and "size" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_too_large_picture_is_a_clear_error_not_an_oom(native_dir, tmp_path, capsys,
                                                       monkeypatch):
    """Above the decoder's pixel cap a picture is refused before anything is allocated."""
    src = write_picture(tmp_path / "big.png", 0, (45, 67))
    monkeypatch.setenv("POLYCHROME_MAX_PIXELS", "1000")
    out = tmp_path / "out.png"
    rc = main(["restyle", str(native_dir), str(src), "--style", "neon", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("error:")
    assert "pixel" in err[0].lower() and not out.exists()
