"""`polychrome restore` and the restore pipeline: sizes, exactness, and every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polychrome.cli.main import main
from polychrome.colour import luma
from polychrome.imageio import decode_image, read_png_metadata
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version
from polychrome.pipelines.restore import restore

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)


def save_tiny(task: str, directory: Path, **kw) -> Path:
    torch.manual_seed(0)
    m = create_model("pix2pix", task=task, **{**TINY, **kw}).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # not the identity / bicubic an untrained head gives
        for p in m.generator.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    meta = {"fit": "crops", "crop": 32, "scale": [32, 96], "styles": ["photo"]}
    return m.save_pretrained(directory, modules=m.inference_modules, meta=meta)


@pytest.fixture
def models(tmp_path):
    names = {"sr": ("tiny-sr", {"scales": [2, 4]}), "inpaint": ("tiny-inpaint", {}),
             "colorize": ("tiny-colorize", {})}
    for task, (name, kw) in names.items():
        add_model_version(save_tiny(task, tmp_path / name, **kw), name)
    return {task: name for task, (name, _) in names.items()}


def photo(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                    np.full_like(xx, 90)], -1).astype(np.int16)
    arr = np.clip(arr + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def mask_png(path: Path, w: int, h: int, box=(0.2, 0.3, 0.5, 0.6), mode="L") -> Path:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = 255
    Image.fromarray(m).convert(mode).save(path)
    return path


@pytest.fixture
def run(capsys):
    """The real entry point: (exit code, stdout, stderr)."""

    def go(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return go


@pytest.mark.parametrize("scale,size", [("4", (37, 23)), ("2", (50, 31)), (None, (8, 8))])
def test_sr_writes_the_enlarged_picture(models, tmp_path, run, scale, size):
    src = photo(tmp_path / "in.jpg", *size)
    args = ["restore", models["sr"], str(src), "-o", str(tmp_path / "out"), "--json"]
    if scale:
        args += ["--scale", scale]
    code, out, err = run(*args)
    assert code == 0, err
    facts = json.loads(out)  # exactly one JSON object on stdout
    s = int(scale or 4)
    assert (facts["width"], facts["height"]) == (size[0] * s, size[1] * s)
    assert facts["task"] == "sr" and facts["scale"] == s and facts["seconds"] >= 0
    arr = decode_image(facts["image"])
    assert arr.shape == (size[1] * s, size[0] * s, 3)
    meta = read_png_metadata(facts["image"])
    assert meta["task"] == "sr" and meta["model"] == models["sr"]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_inpaint_keeps_every_pixel_outside_the_mask(models, tmp_path, run, mode):
    src = photo(tmp_path / "in.png", 45, 33)
    mask = mask_png(tmp_path / "m.png", 45, 33, mode=mode)
    out = tmp_path / "o.png"
    code, _, err = run("restore", models["inpaint"], str(src), "--task", "inpaint", "--mask",
                       str(mask), "-o", str(out))
    assert code == 0, err
    a, b = decode_image(src), decode_image(out)
    holes = np.asarray(Image.open(mask).convert("L")) > 127
    assert a.shape == b.shape
    assert np.array_equal(a[~holes], b[~holes])
    assert not np.array_equal(a[holes], b[holes])


def test_transparent_mask_layer_counts_as_keep(models, tmp_path):
    src = photo(tmp_path / "in.png", 30, 20)
    rgba = np.zeros((20, 30, 4), np.uint8)  # transparent everywhere ...
    rgba[5:10, 5:15] = (255, 255, 255, 255)  # ... but one white stroke
    Image.fromarray(rgba).save(tmp_path / "m.png")
    img = restore(models["inpaint"], str(src), mask=str(tmp_path / "m.png"))
    a = decode_image(src)
    assert np.array_equal(img.array[:5], a[:5]) and img.metadata["mask_fraction"] == "0.0833"


def test_colorize_keeps_the_luma(models, tmp_path):
    src = photo(tmp_path / "in.png", 40, 28)
    img = restore(models["colorize"], str(src), task="colorize")
    grey = decode_image(src).astype(np.float32)
    y_in = 0.299 * grey[..., 0] + 0.587 * grey[..., 1] + 0.114 * grey[..., 2]
    t = torch.from_numpy(img.array).permute(2, 0, 1)[None].float()
    y_out = luma(t)[0, 0].numpy()
    assert img.array.shape == (28, 40, 3)
    assert np.abs(y_out - np.round(y_in)).max() <= 1.5  # 8-bit rounding of R, G, B
    assert img.array.std(axis=2).mean() > 0.5  # colour, not grey


def test_large_pictures_go_through_tiles(models, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYCHROME_TILE_MAX_PIXELS", "1024")
    monkeypatch.setenv("POLYCHROME_TILE_SIDE", "32")
    src = photo(tmp_path / "in.png", 70, 50)
    img = restore(models["sr"], str(src), scale=2)
    assert img.array.shape == (100, 140, 3) and int(img.metadata["tiles"]) > 1


@pytest.mark.parametrize("case,match", [
    ("wrong_task", "super-resolution model"),
    ("scale", "trained for x2, x4, not x3"),
    ("mask_size", "must be the same size"),
    ("mask_empty", "mask is empty"),
    ("mask_full", "whole picture"),
    ("no_mask", "needs a mask"),
    ("mask_for_sr", "mask is for inpainting"),
    ("too_large", "over the"),
    ("not_image", "not a supported image"),
    ("missing", "no such picture"),
    ("unknown_model", "unknown model|no model"),
])
def test_bad_input_is_one_clear_line(models, tmp_path, monkeypatch, run, case, match):
    src = photo(tmp_path / "in.png", 40, 30)
    out = tmp_path / "o.png"
    args = ["restore", models["sr"], str(src), "-o", str(out)]
    if case == "wrong_task":
        args += ["--task", "inpaint"]
    elif case == "scale":
        args += ["--scale", "3"]
    elif case in ("mask_size", "mask_empty", "mask_full", "no_mask"):
        args[1] = models["inpaint"]
        box = {"mask_empty": (0, 0, 0, 0), "mask_full": (0, 0, 1, 1)}.get(case, (0.1, 0.1, .5, .5))
        size = (41, 30) if case == "mask_size" else (40, 30)
        if case != "no_mask":
            args += ["--mask", str(mask_png(tmp_path / "m.png", *size, box=box))]
    elif case == "mask_for_sr":
        args += ["--mask", str(mask_png(tmp_path / "m.png", 40, 30))]
    elif case == "too_large":
        monkeypatch.setenv("POLYCHROME_NATIVE_MAX_SIDE", "100")
        args += ["--scale", "4"]
    elif case == "not_image":
        (tmp_path / "x.png").write_bytes(b"not a picture at all")
        args[2] = str(tmp_path / "x.png")
    elif case == "missing":
        args[2] = str(tmp_path / "nope.png")
    elif case == "unknown_model":
        args[1] = "no-such-model"
    code, stdout, text = run(*args)
    assert code != 0 and stdout == ""
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert re.search(match, text), text
    assert not out.exists()  # nothing half-written


def test_train_pix2pix_from_the_command_line_then_restore(tmp_path, run):
    """`polychrome train pix2pix --dataset D --task sr --scale 4 --crop N` on an imported
    collection, stopped and resumed, registers a model `polychrome restore` can use."""
    for i in range(6):
        (tmp_path / "pics" / "photo").mkdir(parents=True, exist_ok=True)
        photo(tmp_path / "pics" / "photo" / f"p{i}.png", 70 + 3 * i, 50, seed=i)
    code, _, err = run("data", "import", str(tmp_path / "pics"), "--name", "pics")
    assert code == 0, err
    (tmp_path / "tiny.yaml").write_text(
        "model_config: {width: 8, max_width: 16, n_down: 2, n_blocks: 1, d_width: 8}\n"
        "checkpoint_every: 1\nsample_every: 0\nlog_every: 1\n")
    base = ["train", "pix2pix", "--dataset", "pics", "--task", "sr", "--scale", "4",
            "--crop", "32", "--crop-scale", "32,64", "--batch-size", "2",
            "--config", str(tmp_path / "tiny.yaml"), "--run-dir", str(tmp_path / "run"),
            "--name", "pics-sr", "--json"]
    code, out, err = run(*base, "--steps", "2")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["steps"] == 2 and facts["model"]["name"] == "pics-sr"
    code, out, err = run("train", "--resume", str(tmp_path / "run"), "--steps", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 3
    code, out, err = run("restore", "pics-sr", str(tmp_path / "pics" / "photo" / "p0.png"),
                         "--scale", "4", "-o", str(tmp_path / "o.png"), "--json")
    assert code == 0, err
    assert (json.loads(out)["width"], json.loads(out)["height"]) == (280, 200)
    code, _, err = run("restore", "pics-sr", str(tmp_path / "pics" / "photo" / "p0.png"),
                       "--scale", "2", "-o", str(tmp_path / "o2.png"))
    assert code != 0 and "trained for x4, not x2" in err
    code, _, err = run("train", "stargan", "--dataset", "pics", "--task", "sr")
    assert code != 0 and "--task is for restoration models" in err


def test_default_upscaler_prefers_the_sr_model_of_the_same_styles(tmp_path):
    from polychrome.errors import PolychromeError
    from polychrome.pipelines.restore import default_upscaler

    with pytest.raises(PolychromeError, match="no super-resolution model trained for x2"):
        default_upscaler(2)
    for name, styles in (("photo-up", ["photo"]), ("emoji-up", ["noto", "twemoji"])):
        d = save_tiny("sr", tmp_path / name, scales=[2, 4])
        spec = json.loads((d / "config.json").read_text())
        spec["meta"]["styles"] = styles
        (d / "config.json").write_text(json.dumps(spec))
        add_model_version(d, name)
    assert default_upscaler(4) == "photo-up:1"  # no styles: the first registered
    assert default_upscaler(4, ["twemoji", "openmoji"]) == "emoji-up:1"
    assert default_upscaler("2", ["photo", "clipart"]) == "photo-up:1"
    with pytest.raises(PolychromeError, match="x3"):
        default_upscaler(3)
