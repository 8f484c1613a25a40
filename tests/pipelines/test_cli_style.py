"""`polychrome restyle | mix | interpolate | styles` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from polychrome.cli.main import main
from polychrome.imageio import decode_image, read_png_metadata
from polychrome.persistence.models import add_model_version
from polychrome.pipelines.style import regenerate_style, restyle

from .stylehelpers import save_tiny, write_picture


@pytest.fixture
def models(tmp_path: Path) -> dict[str, str]:
    out = {}
    for arch, name in (("stargan", "tiny-star"), ("stylegan", "tiny-sg"), ("dcgan", "tiny-dc")):
        add_model_version(save_tiny(arch, tmp_path / arch), name)
        out[arch] = name
    return out


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one JSON object on stdout


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_restyle_save_style_list_and_reuse(models, tmp_path: Path, capsys):
    src = write_picture(tmp_path / "in" / "cat.png", 0)
    ref = write_picture(tmp_path / "ref.png", 1, (48, 32))
    res = run_json(capsys, "restyle", models["stargan"], str(src), "--style", "neon",
                   "--seed", "5", "--variations", "2", "-o", str(tmp_path / "out"))
    assert len(res["images"]) == 2 and res["model"] == "tiny-star" and res["version"] == "1"
    first = Path(res["images"][0])
    assert first.name.startswith("cat-restyle-neon-seed5")
    expected = restyle("tiny-star", [str(src)], style="neon", seed=5)[0]
    assert decode_image(first).tobytes() == expected.array.tobytes()
    assert regenerate_style(read_png_metadata(first), src).array.tobytes() == \
        expected.array.tobytes()

    res = run_json(capsys, "restyle", models["stargan"], str(src), "--reference", str(ref),
                   "--style", "pastel", "--save-style", "paper", "-o", str(tmp_path / "o2"))
    assert res["saved_style"]["name"] == "paper" and res["saved_style"]["kind"] == "s"
    listing = run_json(capsys, "styles", "list", models["stargan"])
    assert listing["learned"] == ["ink", "neon", "pastel"]
    assert [e["name"] for e in listing["bank"]] == ["paper"]
    res2 = run_json(capsys, "restyle", models["stargan"], str(src), "--style", "bank:paper",
                    "-o", str(tmp_path / "o3"))
    assert decode_image(res2["images"][0]).tobytes() == decode_image(res["images"][0]).tobytes()
    err = one_line_error(*run(capsys, "restyle", models["stargan"], str(src), "--style", "ink",
                              "--save-style", "paper", "-o", str(tmp_path / "o4")))
    assert "already exists" in err
    assert run_json(capsys, "styles", "remove", models["stargan"], "paper")["removed"] == "paper"
    assert run_json(capsys, "styles", "list", models["stargan"])["bank"] == []


def test_mix_and_interpolate(models, tmp_path: Path, capsys):
    src = write_picture(tmp_path / "in.png", 0)
    ref = write_picture(tmp_path / "ref.png", 1)
    res = run_json(capsys, "mix", models["stargan"], str(src), "--style", "ink=1",
                   "--style", "neon=3", "--reference", f"{ref}=4", "-o", str(tmp_path / "m.png"))
    assert res["weights"] == [0.125, 0.375, 0.5]
    assert [c["kind"] for c in res["components"]] == ["latent", "latent", "reference"]
    assert Path(res["image"]).is_file()
    # noise -> image: no INPUT; stylegan per-layer mix
    res = run_json(capsys, "mix", models["stylegan"], "--style", "ink", "--style", "neon",
                   "--crossover", "2", "-o", str(tmp_path / "sg.png"))
    assert res["style"] == "ink|neon@2"
    assert decode_image(tmp_path / "sg.png").shape == (16, 16, 3)
    res = run_json(capsys, "mix", models["dcgan"], "--style", "ink=0.5", "--style", "pastel=0.5",
                   "-o", str(tmp_path / "dc.png"))
    assert res["weights"] == [0.5, 0.5]

    res = run_json(capsys, "interpolate", models["stargan"], str(src), "--from", "ink",
                   "--to", str(ref), "--frames", "4", "--pingpong", "-o", str(tmp_path / "a.gif"),
                   "--frames-dir", str(tmp_path / "frames"))
    assert res["frames"] == 6 and res["format"] == "gif" and len(res["frame_images"]) == 4
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == res["frames_written"] == 6
    res = run_json(capsys, "interpolate", models["stylegan"], "--from", "seed:1", "--to",
                   "seed:2", "--frames", "3", "-o", str(tmp_path / "s.gif"))
    assert res["frames_written"] == 3


def test_bad_inputs_one_line_errors(models, tmp_path: Path, capsys):
    src = write_picture(tmp_path / "in.png", 0)
    out = str(tmp_path / "out")
    err = one_line_error(*run(capsys, "restyle", models["stargan"], str(src), "--style", "sepia",
                              "-o", out))
    assert "unknown style 'sepia'; valid styles: ink, neon, pastel" in err
    err = one_line_error(*run(capsys, "restyle", models["dcgan"], str(src), "--style", "ink",
                              "-o", out))
    assert err == ("error: restyle needs a translation model (stargan, cyclegan); dcgan is a "
                   "noise → image model — use generate/mix")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 30)
    err = one_line_error(*run(capsys, "restyle", models["stargan"], str(broken), "--style",
                              "ink", "-o", out))
    assert err.startswith("error: broken.jpg: ")
    err = one_line_error(*run(capsys, "restyle", models["stargan"], "--style", "ink", "-o", out))
    assert "at least one INPUT" in err
    err = one_line_error(*run(capsys, "mix", models["stargan"], "--style", "ink",
                              "-o", str(tmp_path / "m.png")))
    assert "needs an INPUT" in err
    for weight, msg in (("neon=abc", "is not a number"), ("neon=-1", ">= 0"),
                        ("neon=0", "sum to 0")):
        err = one_line_error(*run(capsys, "mix", models["stargan"], str(src), "--style", weight,
                                  "-o", str(tmp_path / "m.png")))
        assert msg in err
    err = one_line_error(*run(capsys, "mix", models["dcgan"], str(src), "--style", "ink",
                              "-o", str(tmp_path / "m.png")))
    assert "takes no INPUT" in err
    err = one_line_error(*run(capsys, "interpolate", models["stargan"], str(src), "--from", "ink",
                              "--to", "neon", "-o", str(tmp_path / "a.webm")))
    assert "-o must end in .gif" in err
    err = one_line_error(*run(capsys, "styles", "list", "no-such-model"))
    assert "no model named 'no-such-model'" in err
