"""The generate pipeline: shapes, metadata, bit-exact reproducibility, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polychrome import __version__
from polychrome.cli.main import main
from polychrome.errors import PolychromeError
from polychrome.imageio import decode_image, read_png_metadata
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version, load_model
from polychrome.pipelines import generate, regenerate, save_images

STYLES = ["ink", "neon", "pastel"]


def tiny(arch: str, num_domains: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    kw = {"width": 8}
    if arch == "stylegan":
        kw.update(max_channels=16, z_dim=16, w_dim=16, mapping_layers=2)
    model = create_model(arch, resolution=16, num_domains=num_domains, **kw)
    model.meta["styles"] = STYLES[:num_domains] if num_domains > 1 else ["only"]
    return model.eval()


@pytest.fixture
def registered(tmp_path: Path) -> str:
    model = tiny("stylegan")
    model.save_pretrained(tmp_path / "sg", modules=model.inference_modules,
                          meta={"styles": STYLES})
    add_model_version(tmp_path / "sg", "tiny-sg")
    return "tiny-sg"


def test_shapes_metadata_and_style_cycle(registered: str):
    images = generate(registered, 5, seed=10)
    assert len(images) == 5
    for i, im in enumerate(images):
        assert im.array.shape == (16, 16, 3) and im.array.dtype == np.uint8
        assert im.metadata == {
            "model": "tiny-sg", "version": "1", "arch": "stylegan",
            "style": STYLES[(10 + i) % 3], "seed": str(10 + i), "truncation": "1.0",
            "index": str(i), "polychrome_version": __version__}
    assert {im.metadata["style"] for im in generate(registered, 2, style="neon")} == {"neon"}
    assert generate(registered, 1, style=2)[0].metadata["style"] == "pastel"


def test_same_seed_same_bytes_and_regenerate_bit_exact(registered: str):
    a = generate(registered, 6, seed=3, truncation=0.7)
    b = generate(registered, 6, seed=3, truncation=0.7)
    for x, y in zip(a, b, strict=True):
        assert x.array.tobytes() == y.array.tobytes()
    # image i of a request never depends on n or on its neighbours
    c = generate(registered, 2, seed=7, truncation=0.7)
    assert a[4].array.tobytes() == c[0].array.tobytes()
    for im in a[::3]:  # from the registry spec in the metadata, like a user would
        again = regenerate(im.metadata)
        assert again.metadata == im.metadata
        assert again.array.tobytes() == im.array.tobytes()
    # different seeds and different truncation give different images
    assert len({im.array.tobytes() for im in a}) == 6
    assert generate(registered, 1, seed=3)[0].array.tobytes() != a[0].array.tobytes()


@pytest.mark.parametrize("arch", ["dcgan", "sngan", "mlp-gan"])
def test_loaded_model_objects_and_unconditional(arch: str):
    model = tiny(arch, num_domains=1)
    images = generate(model, 3, seed=0)
    assert [im.metadata["style"] for im in images] == ["only"] * 3
    assert regenerate(images[2].metadata, model=model).array.tobytes() == \
        images[2].array.tobytes()


def test_user_errors_are_polychrome_errors(registered: str):
    with pytest.raises(PolychromeError, match="unknown style 'sepia'; valid styles: ink, neon, "
                                              "pastel"):
        generate(registered, 1, style="sepia")
    with pytest.raises(PolychromeError, match="unknown style"):
        generate(registered, 1, style=3)
    for bad in ({"n": 0}, {"n": 10**6}, {"n": 1, "seed": -1}, {"n": 1, "truncation": -1.0},
                {"n": 1, "truncation": float("nan")}):
        with pytest.raises(PolychromeError):
            generate(registered, **bad)
    with pytest.raises(PolychromeError, match="lacks"):
        regenerate({"model": "tiny-sg"})


def test_save_images_png_metadata_round_trip(registered: str, tmp_path: Path):
    images = generate(registered, 3, seed=5, style="ink")
    paths = save_images(images, tmp_path / "out")
    assert len(set(paths)) == 3
    for path, im in zip(paths, images, strict=True):
        meta = read_png_metadata(path)
        assert meta == im.metadata
        assert np.array_equal(decode_image(path), im.array)
        assert regenerate(meta).array.tobytes() == im.array.tobytes()


def test_save_while_generating_writes_what_generate_and_save_images_write(registered: str,
                                                                         tmp_path: Path):
    from polychrome.pipelines.generate import GeneratedImage, save_while_generating

    want = save_images(generate(registered, 5, seed=2), tmp_path / "a")
    images, paths = save_while_generating(registered, 5, tmp_path / "b", seed=2)
    assert [p.name for p in paths] == [p.name for p in want]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in want]
    assert [im.metadata["index"] for im in images] == ["0", "1", "2", "3", "4"]

    def flipped(im: GeneratedImage) -> GeneratedImage:  # runs in the writer before the write
        return GeneratedImage(np.ascontiguousarray(im.array[:, ::-1]), im.metadata)

    images, paths = save_while_generating(registered, 2, tmp_path / "c", seed=2,
                                          finish=flipped)
    assert np.array_equal(decode_image(paths[1]), decode_image(want[1])[:, ::-1])
    assert np.array_equal(images[1].array, decode_image(paths[1]))
    with pytest.raises(PolychromeError, match="valid styles"):
        save_while_generating(registered, 2, tmp_path / "d", style="sepia")


def test_cli_generate_json(registered: str, tmp_path: Path, capsys):
    out_dir = tmp_path / "gen"
    code = main(["generate", registered, "--n", "3", "--seed", "4", "--style", "neon",
                 "-o", str(out_dir), "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)  # exactly one JSON object on stdout
    assert result["model"] == "tiny-sg" and result["seed"] == 4
    assert len(result["images"]) == 3 and all(Path(p).is_file() for p in result["images"])
    first = read_png_metadata(result["images"][0])
    expected = generate(load_model(registered), 1, seed=4, style="neon")[0]
    assert decode_image(result["images"][0]).tobytes() == expected.array.tobytes()
    assert first["seed"] == "4"

    code = main(["generate", registered, "--n", "1", "--style", "sepia", "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "valid styles: ink, neon, pastel" in err
    assert "Traceback" not in err
