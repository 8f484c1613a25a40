"""`--runtime onnx` on the command line, the server's runtime setting, the refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from polychrome.cli.main import main
from polychrome.errors import PolychromeError
from polychrome.imageio import decode_image
from polychrome.models import create_model
from polychrome.models.zoo.cyclegan import CycleGAN, CycleGANConfig
from polychrome.models.zoo.pix2pix import Pix2Pix, Pix2PixConfig
from polychrome.persistence.models import add_model_version
from polychrome.pipelines.tiling import TileSettings, run_image_model
from polychrome.runtime import use_runtime
from polychrome.runtime.onnx_export import RuntimeUnavailable, RuntimeUnsupported

needs_onnx = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnxruntime", "onnxscript")),
    reason="the onnx extra is not installed")

# PNGs are uint8: fp32 ONNX output rounds to the same byte except where a value sits on a
# rounding edge, where it may land one step away.
MAX_STEP = 1


def _pixels(path) -> np.ndarray:
    return decode_image(path.read_bytes()).astype(np.int16)


def _tiny_dcgan(tmp_path):
    torch.manual_seed(0)
    model = create_model("dcgan", resolution=16, num_domains=2, width=8, z_dim=8)
    model.meta["styles"] = ["ink", "neon"]
    path = tmp_path / "dc"
    model.save_pretrained(path, modules=model.inference_modules)
    return path


@needs_onnx
def test_generate_cli_runtime_onnx_gives_the_same_png(tmp_path):
    model = _tiny_dcgan(tmp_path)
    for runtime in ("torch", "onnx"):
        code = main(["generate", str(model), "--n", "2", "--seed", "3", "--runtime", runtime,
                     "-o", str(tmp_path / runtime)])
        assert code == 0
    for name in sorted(p.name for p in (tmp_path / "torch").glob("*.png")):
        a, b = _pixels(tmp_path / "torch" / name), _pixels(tmp_path / "onnx" / name)
        assert a.shape == b.shape and int(np.abs(a - b).max()) <= MAX_STEP


@needs_onnx
def test_restore_cli_runtime_onnx_gives_the_same_png(tmp_path):
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(task="sr", scales=[2], width=8, max_width=16, n_down=2,
                                  n_blocks=1))
    for head in model.generator.heads.values():
        torch.nn.init.normal_(head.weight, std=0.05)
    model.save_pretrained(tmp_path / "sr", modules=model.inference_modules)
    picture = tmp_path / "in.png"
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (13, 19, 3), dtype=np.uint8)).save(picture)
    for runtime in ("torch", "onnx"):
        assert main(["restore", str(tmp_path / "sr"), str(picture), "--runtime", runtime,
                     "-o", str(tmp_path / f"{runtime}.png")]) == 0
    a, b = _pixels(tmp_path / "torch.png"), _pixels(tmp_path / "onnx.png")
    assert a.shape == (26, 38, 3) and int(np.abs(a - b).max()) <= MAX_STEP


@needs_onnx
def test_server_runtime_setting_is_honoured_per_model(tmp_path, monkeypatch):
    from polychrome.serving.inference import PipelineCache

    add_model_version(_tiny_dcgan(tmp_path), "fast")
    add_model_version(_tiny_dcgan(tmp_path / "b"), "plain")
    monkeypatch.setenv("POLYCHROME_RUNTIME_MODELS", "fast=onnx")
    cache = PipelineCache(2, "cpu")
    assert getattr(cache.get("fast").model, "runtime", "torch") == "onnx"
    assert getattr(cache.get("plain").model, "runtime", "torch") == "torch"


def test_runtime_settings_are_checked(monkeypatch):
    from polychrome.settings import Settings

    assert Settings(runtime_models={"a": "onnx"}).runtime_for("a") == "onnx"
    assert Settings(runtime="onnx").runtime_for("b") == "onnx"
    with pytest.raises(ValueError):
        Settings(runtime="tensorrt")
    with pytest.raises(ValueError):
        Settings(runtime_models="a=fast")


@needs_onnx
def test_tiled_pictures_are_refused_not_approximated(tmp_path):
    torch.manual_seed(0)
    model = use_runtime(CycleGAN(CycleGANConfig(resolution=16, width=4, n_blocks=1)).eval(),
                        "onnx", cache_dir=tmp_path)
    x = torch.rand(1, 3, 24, 24) * 2 - 1
    settings = TileSettings(tile=8, overlap=2, context=4, max_pixels=64)
    with pytest.raises(RuntimeUnsupported, match="tile_max_pixels"):
        run_image_model(model.generator, x, multiple=4, settings=settings)
    out, info = run_image_model(model.generator, x, multiple=4)  # fits: one pass is fine
    assert info["tiles"] == 1 and out.shape == x.shape


def test_missing_onnxruntime_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when absent
    model = create_model("dcgan", resolution=16, width=8, z_dim=8).eval()
    with pytest.raises(RuntimeUnavailable, match=r"polychrome\[onnx\]"):
        use_runtime(model, "onnx", cache_dir=tmp_path)
    assert use_runtime(model, "torch") is model  # the core install needs nothing more


def test_missing_onnxruntime_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code = main(["generate", str(_tiny_dcgan(tmp_path)), "--runtime", "onnx",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'polychrome[onnx]'" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_runtime_is_refused():
    model = create_model("dcgan", resolution=16, width=8, z_dim=8)
    with pytest.raises(PolychromeError, match="valid runtimes: torch, onnx"):
        use_runtime(model, "tensorrt")


@needs_onnx
def test_restyle_cli_runtime_onnx_at_an_odd_size(tmp_path, capsys):
    """A native-size StarGAN restyles a 67 x 45 picture through both runtimes; --json stays
    one line (the exporter's chatter never reaches stdout)."""
    import json

    from PIL import Image

    torch.manual_seed(0)
    model = create_model("stargan", resolution=16, num_domains=3, width=8, max_width=16,
                         style_dim=8, latent_dim=4, mapping_dim=16, mapping_shared_layers=1,
                         mapping_head_layers=1, e_width=8, e_max_width=16, d_width=8,
                         d_max_width=16, enc_blocks=1, dec_blocks=1, skips=1)
    meta = {"styles": ["ink", "neon", "pastel"], "fit": "crops", "crop": 16, "scale": [16, 48]}
    model.save_pretrained(tmp_path / "star", modules=model.inference_modules, meta=meta)
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 67, 3),
                                                      dtype=np.uint8)).save(src)
    for runtime in ("torch", "onnx"):
        code = main(["restyle", str(tmp_path / "star"), str(src), "--style", "neon",
                     "--runtime", runtime, "-o", str(tmp_path / f"{runtime}.png"), "--json"])
        lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
        assert code == 0 and len(lines) == 1 and json.loads(lines[0])["width"] == 67
    a, b = _pixels(tmp_path / "torch.png"), _pixels(tmp_path / "onnx.png")
    assert a.shape == (45, 67, 3) and int(np.abs(a - b).max()) <= MAX_STEP
