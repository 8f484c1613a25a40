"""The style pipeline: restyle / blend / strength / per-layer mix / interpolate / bank / switching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polychrome.errors import ImageRejected, PolychromeError
from polychrome.imageio import decode_image, read_png_metadata, to_tensor
from polychrome.persistence.models import load_model
from polychrome.pipelines import generate, stylebank
from polychrome.pipelines.animate import interpolate, mp4_available, write_animation
from polychrome.pipelines.style import (
    ContentCache,
    Restyler,
    mix,
    regenerate_style,
    restyle,
    save_style_images,
)

from .stylehelpers import STYLES, picture, save_tiny, tiny, write_picture


@pytest.fixture(scope="module")
def star_dir(tmp_path_factory) -> Path:
    return save_tiny("stargan", tmp_path_factory.mktemp("models") / "star")


@pytest.fixture
def star(star_dir: Path):
    return load_model(str(star_dir))


def _x(arr: np.ndarray, model) -> torch.Tensor:
    from polychrome.data.cache import square_resize

    return to_tensor(square_resize(arr, model.config.resolution))[None]  # (1, 3, 16, 16)


def _u8(out: torch.Tensor) -> bytes:
    from polychrome.imageio import from_tensor

    return from_tensor(out[0]).tobytes()


def _z(model, seed: int) -> torch.Tensor:
    return model.sample_z(1, generator=torch.Generator().manual_seed(seed), device="cpu")


def test_restyle_by_name_variations_deterministic(star):
    img = picture(0)
    out = restyle(star, [img], style="neon", seed=3, variations=3)
    assert [o.array.shape for o in out] == [(16, 16, 3)] * 3
    assert [o.metadata["seed"] for o in out] == ["3", "4", "5"]
    assert len({o.array.tobytes() for o in out}) == 3  # different seeds differ
    again = restyle(star, [img], style="neon", seed=3, variations=3)
    assert [o.array.tobytes() for o in again] == [o.array.tobytes() for o in out]
    # variation k is seed S+k alone: independent of how many were asked for
    assert restyle(star, [img], style="neon", seed=4)[0].array.tobytes() == out[1].array.tobytes()
    # ... and it is exactly the uncached full forward G(x, F(z_S, y))
    with torch.inference_mode():
        full = star.generator(_x(img, star), star.style_from_latent(_z(star, 3), 1))
    assert _u8(full) == out[0].array.tobytes()
    meta = out[0].metadata
    assert meta["op"] == "restyle" and meta["style"] == "neon" and meta["arch"] == "stargan"
    assert json.loads(meta["recipe"])["components"] == [
        {"kind": "latent", "style": "neon", "seed": 3}]


def test_restyle_by_reference_and_regenerate(star, tmp_path: Path):
    img, ref = picture(0), picture(1, (40, 30))  # a picture the model never saw, any size
    out = restyle(star, [img], reference=ref)[0]
    comp = json.loads(out.metadata["recipe"])["components"][0]
    assert comp["kind"] == "reference" and comp["domain_by"] == "reconstruction"
    assert comp["style"] in STYLES and out.metadata["reference_sha256s"] == comp["sha256"]
    pinned = restyle(star, [img], reference=ref, style="pastel")[0]
    comp = json.loads(pinned.metadata["recipe"])["components"][0]
    assert (comp["style"], comp["domain_by"]) == ("pastel", "user")
    with torch.inference_mode():
        x = _x(img, star)
        s = star.style_from_reference(_x(ref, star), 2)
        assert _u8(star.generator(x, s)) == pinned.array.tobytes()
    # through PNG files, like a user would
    src, ref_path = write_picture(tmp_path / "src.png", 0), tmp_path / "ref.png"
    Image.fromarray(ref).save(ref_path)
    [path] = save_style_images([pinned], tmp_path / "out", ["src"])
    meta = read_png_metadata(path)
    again = regenerate_style(meta, src, [ref_path])
    assert again.array.tobytes() == decode_image(path).tobytes()
    assert again.metadata == pinned.metadata
    with pytest.raises(PolychromeError, match="missing reference"):
        regenerate_style(meta, src, [])
    with pytest.raises(PolychromeError, match="not the source picture"):
        regenerate_style(meta, picture(5), [ref_path])


def test_strength_zero_is_reconstruction_one_is_target(star):
    img = picture(0)
    target = restyle(star, [img], style="neon", seed=2)[0]
    full = restyle(star, [img], style="neon", seed=2, strength=1.0)[0]
    assert full.array.tobytes() == target.array.tobytes()
    zero = restyle(star, [img], style="neon", seed=2, strength=0.0, source_style="ink")[0]
    with torch.inference_mode():
        x = _x(img, star)
        recon = star.generator(x, star.style_from_reference(x, 0))  # G(x, E(x, y_src))
    assert zero.array.tobytes() == _u8(recon)
    half = restyle(star, [img], style="neon", seed=2, strength=0.5, source_style="ink")[0]
    assert half.array.tobytes() not in (zero.array.tobytes(), target.array.tobytes())
    guessed = restyle(star, [img], style="neon", seed=2, strength=0.5)[0]
    assert json.loads(guessed.metadata["recipe"])["source_style_by"] == "reconstruction"
    assert regenerate_style(guessed.metadata, img).array.tobytes() == guessed.array.tobytes()
    # pixel blend: out = (1 - b) x + b G(x, s); b = 0 gives the (resized) input back
    same = restyle(star, [img], style="neon", pixel_blend=0.0)[0]
    assert np.abs(same.array.astype(int) - _u8_arr(_x(img, star))).max() <= 1
    for bad in ({"strength": 1.5}, {"strength": float("nan")}, {"pixel_blend": -0.1}):
        with pytest.raises(PolychromeError, match="in \\[0, 1\\]"):
            restyle(star, [img], style="neon", **bad)


def _u8_arr(x: torch.Tensor) -> np.ndarray:
    from polychrome.imageio import from_tensor

    return from_tensor(x[0]).astype(int)


def test_blend_weights(star):
    img = picture(0)
    single = mix(star, [("neon", 3.0)], source=img, seed=1)
    assert single.array.tobytes() == restyle(star, [img], style="neon", seed=1)[0].array.tobytes()
    both = mix(star, [("ink", 1.0), ("neon", 3.0)], source=img, seed=1)
    assert json.loads(both.metadata["recipe"])["weights"] == [0.25, 0.75]
    assert both.metadata["style"] == "0.25*ink+0.75*neon"
    with torch.inference_mode():
        z = _z(star, 1)
        s = star.style_from_latent(z, 0) * 0.25 + star.style_from_latent(z, 1) * 0.75
        assert _u8(star.generator(_x(img, star), s)) == both.array.tobytes()
    for bad, msg in (([("ink", -1.0), ("neon", 2.0)], ">= 0"), ([("ink", 0.0)], "sum to 0"),
                     ([("ink", float("nan"))], "finite"), ([], "at least one")):
        with pytest.raises(PolychromeError, match=msg):
            mix(star, bad, source=img)
    with pytest.raises(PolychromeError, match="unknown style 'sepia'; valid styles: ink, neon"):
        mix(star, [("sepia", 1.0)], source=img)
    with pytest.raises(PolychromeError, match="needs an INPUT"):
        mix(star, [("ink", 1.0)])


def test_cached_switching_matches_full_restyle(star):
    cache = ContentCache(maxsize=4)
    r = Restyler(star, cache=cache)
    img, ref = picture(0), picture(1)
    r.set_image(img)
    assert (cache.misses, len(cache._items)) == (1, 1)
    live = [r.render("neon", seed=7).array.tobytes(), r.render(ref).array.tobytes(),
            r.render([("ink", 1.0), ("pastel", 1.0)], seed=7).array.tobytes(),
            r.render("neon", seed=7, strength=0.3).array.tobytes()]
    assert cache.misses == 1  # every switch reused the one encoding
    fresh = [restyle(star, [img], style="neon", seed=7, restyler=Restyler(star, cache=ContentCache()))[0],
             restyle(star, [img], reference=ref)[0],
             mix(star, [("ink", 1.0), ("pastel", 1.0)], source=img, seed=7),
             restyle(star, [img], style="neon", seed=7, strength=0.3)[0]]
    assert live == [f.array.tobytes() for f in fresh]
    r.set_image(picture(2))
    r.set_image(img)  # back to the first picture: still cached
    assert cache.misses == 2 and cache.hits >= 1


def test_style_bank_save_list_use(star, polychrome_home: Path):
    img, ref = picture(0), picture(1)
    r = Restyler(star)
    r.set_image(img)
    from_ref = r.render(ref, reference_style="neon")
    from polychrome.pipelines.recipe import Recipe

    entry = r.save_style("sunny", Recipe.from_json(from_ref.metadata["recipe"]))
    key = stylebank.bank_key(star)
    assert key.startswith("star-")  # a model dir outside the registry: name + path hash
    d = polychrome_home / "stylebank" / key
    assert (d / "sunny.safetensors").is_file() and (d / "sunny.json").is_file()
    assert entry["source"]["components"][0]["kind"] == "reference"
    assert [e["name"] for e in stylebank.list_bank(star)] == ["sunny"]
    # usable by bank:NAME and by bare NAME, identical to the reference it came from
    for spec in ("bank:sunny", "sunny"):
        used = restyle(star, [img], style=spec)[0]
        assert used.array.tobytes() == from_ref.array.tobytes()
        assert used.metadata["style"] == "bank:sunny"
        assert regenerate_style(used.metadata, img).array.tobytes() == used.array.tobytes()
    # a bank entry named like a learned style: the learned one wins unless bank: is given
    code, _ = stylebank.load_style(star, "sunny")
    stylebank.save_style(star, "neon", code, {"kind": "copy"})
    assert restyle(star, [img], style="neon", seed=0)[0].metadata["style"] == "neon"
    assert restyle(star, [img], style="bank:neon")[0].array.tobytes() == \
        from_ref.array.tobytes()
    with pytest.raises(PolychromeError, match="already exists"):
        stylebank.save_style(star, "sunny", code, {})
    with pytest.raises(PolychromeError, match="saved styles: neon, sunny"):
        restyle(star, [img], style="bank:rainy")
    stylebank.remove_style(star, "sunny")
    assert [e["name"] for e in stylebank.list_bank(star)] == ["neon"]


def test_interpolate_gif_frames(star, tmp_path: Path):
    img = picture(0)
    frames = interpolate(star, "ink", "neon", source=img, frames=5, seed=3)
    assert [f.metadata["frame"] for f in frames] == ["0", "1", "2", "3", "4"]
    # the endpoints are the plain restyles
    assert frames[0].array.tobytes() == restyle(star, [img], style="ink", seed=3)[0].array.tobytes()
    assert frames[-1].array.tobytes() == \
        restyle(star, [img], style="neon", seed=3)[0].array.tobytes()
    assert regenerate_style(frames[2].metadata, img).array.tobytes() == frames[2].array.tobytes()
    info = write_animation(frames, tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 5 == info["frames_written"]
        assert json.loads(gif.info["comment"])["to"]["style"] == "neon"
    if mp4_available():  # optional encoder (imageio-ffmpeg)
        info = write_animation(frames, tmp_path / "a.mp4", scale=2)
        assert info["size"] == [32, 32] and (tmp_path / "a.mp4").read_bytes()[4:8] == b"ftyp"
    loop = interpolate(star, "seed:1", "seed:2", source=img, frames=4, style="pastel",
                       pingpong=True)
    assert len(loop) == 6 and json.loads(loop[1].metadata["recipe"])["interp"] == "slerp"
    with pytest.raises(PolychromeError, match="needs a style"):
        interpolate(star, "seed:1", "seed:2", source=img, frames=3)
    with pytest.raises(PolychromeError, match="frames must be"):
        interpolate(star, "ink", "neon", source=img, frames=1)


def test_stylegan_per_layer_mixing_and_noise_blends():
    sg = tiny("stylegan")
    n = sg.generator.num_ws
    a = generate(sg, 1, seed=5, style="ink")[0]
    b_img = generate(sg, 1, seed=5, style="neon")[0]
    assert mix(sg, [("ink", 2.0)], seed=5).array.tobytes() == a.array.tobytes()
    coarse_a = mix(sg, [("ink", 1.0), ("neon", 1.0)], seed=5, crossover=n // 2)
    assert coarse_a.array.shape == (16, 16, 3) and coarse_a.metadata["style"] == \
        f"ink|neon@{n // 2}"
    assert coarse_a.array.tobytes() not in (a.array.tobytes(), b_img.array.tobytes())
    assert mix(sg, [("ink", 1.0), ("neon", 1.0)], seed=5, crossover=n).array.tobytes() == \
        a.array.tobytes()
    assert mix(sg, [("ink", 1.0), ("neon", 1.0)], seed=5, crossover=0).array.tobytes() == \
        b_img.array.tobytes()
    assert regenerate_style(coarse_a.metadata, model=sg).array.tobytes() == \
        coarse_a.array.tobytes()
    with pytest.raises(PolychromeError, match=f"0..{n}"):
        mix(sg, [("ink", 1.0), ("neon", 1.0)], crossover=n + 1)
    # label-embedding blends for other conditional noise models
    dc = tiny("dcgan")
    assert mix(dc, [("neon", 1.0)], seed=2).array.tobytes() == \
        generate(dc, 1, seed=2, style="neon")[0].array.tobytes()
    assert mix(dc, [("neon", 1.0), ("ink", 1.0)], seed=2).array.tobytes() != \
        generate(dc, 1, seed=2, style="neon")[0].array.tobytes()
    with pytest.raises(PolychromeError, match="per-layer mixing needs"):
        mix(dc, [("neon", 1.0), ("ink", 1.0)], crossover=1)
    plain = tiny("dcgan", num_domains=1)  # one style: a "blend" of two seeds slerps z
    assert mix(plain, [("only", 1.0)], seed=2).array.tobytes() == \
        generate(plain, 1, seed=2)[0].array.tobytes()
    assert mix(plain, [("only", 1.0), ("seed:3", 1.0)], seed=2).array.tobytes() == \
        interpolate(plain, "seed:2", "seed:3", frames=3)[1].array.tobytes()
    assert len(interpolate(dc, "seed:1", "seed:2", frames=3, style="ink")) == 3


def test_wrong_family_and_bad_pictures(star, tmp_path: Path):
    with pytest.raises(PolychromeError) as e:
        restyle(tiny("dcgan"), [picture(0)], style="ink")
    assert str(e.value) == ("restyle needs a translation model (stargan, cyclegan); dcgan is a "
                            "noise → image model — use generate/mix")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ImageRejected, match="broken.png: "):
        restyle(star, [bad], style="ink")
    with pytest.raises(PolychromeError, match="at least one INPUT"):
        restyle(star, [], style="ink")
    with pytest.raises(PolychromeError, match="variations need a latent-guided"):
        restyle(star, [picture(0)], reference=picture(1), variations=2)
    cyc = tiny("cyclegan")
    out = restyle(cyc, [picture(0)], style="neon", pixel_blend=0.5)[0]
    assert out.array.shape == (16, 16, 3)
    assert regenerate_style(out.metadata, picture(0), model=cyc).array.tobytes() == \
        out.array.tobytes()
    with pytest.raises(PolychromeError, match="no style codes"):
        restyle(cyc, [picture(0)], style="neon", strength=0.5)
    with pytest.raises(PolychromeError, match="no style codes to blend"):
        mix(cyc, [("ink", 1.0), ("neon", 1.0)], source=picture(0))
