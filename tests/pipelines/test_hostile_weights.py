"""Style weights from anyone: huge but finite weights blend by their ratios (their sum used
to overflow math.fsum into an internal error), bad ones are a clear error, and a recipe read
back from a file is checked like any other input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from polychrome.cli.main import main
from polychrome.errors import PolychromeError
from polychrome.imageio import read_png_metadata
from polychrome.persistence.models import add_model_version
from polychrome.pipelines.recipe import Recipe
from polychrome.pipelines.style import Restyler, regenerate_style
from polychrome.pipelines.style_codes import normalise_weights

from .stylehelpers import save_tiny, tiny, write_picture

BIG = 1.7976931348623157e308  # the largest float


@pytest.mark.parametrize("weights, expected", [
    ([1e308, 1e308], [0.5, 0.5]),
    ([BIG, BIG, BIG], [1 / 3] * 3),
    ([BIG, 0.0], [1.0, 0.0]),
    ([1.5e308, 0.5e308], [0.75, 0.25]),
    ([5e-324], [1.0]),
    ([5e-324, 5e-324], [0.5, 0.5]),
    ([0.25, 0.75], [0.25, 0.75]),  # ordinary weights: exactly as before
])
def test_finite_weights_of_any_size_normalise(weights, expected):
    out = normalise_weights(weights)
    assert out == pytest.approx(expected, rel=1e-12)
    assert all(math.isfinite(w) for w in out) and math.fsum(out) == pytest.approx(1.0)


@pytest.mark.parametrize("weights, words", [
    ([math.inf], "finite"), ([math.nan, 1], "finite"), ([-1e308, 1], ">= 0"),
    ([0.0, 0.0], "sum to 0"), ([], "at least one"),
])
def test_bad_weights_are_clear_errors(weights, words):
    with pytest.raises(PolychromeError, match=words):
        normalise_weights(weights)


def test_a_weight_too_big_for_a_float_is_a_clear_error():
    r = Restyler(tiny("dcgan"))
    with pytest.raises(PolychromeError) as err:
        r.build([("ink", 10**400)], op="mix")
    assert err.value.code == "bad_weight"


def _recipe(weights, n=2, crossover=None) -> str:
    comps = [{"kind": "latent", "style": "ink", "seed": 0}] * n
    return json.dumps({"op": "mix", "components": comps, "weights": weights,
                       "crossover": crossover, "v": 1})


@pytest.mark.parametrize("weights", [[1e308, 1e308], [2.0, -1.0], [0.5], [0.5, "0.5"],
                                     [True, False], [0.2, 0.2], None, "[0.5, 0.5]"])
def test_recipes_from_files_with_bad_weights_are_refused(weights):
    with pytest.raises(PolychromeError) as err:
        Recipe.from_json(_recipe(weights))
    assert err.value.code == "bad_metadata"


def test_recipes_as_the_pipelines_write_them_still_load():
    assert Recipe.from_json(_recipe([0.25, 0.75])).weights == [0.25, 0.75]
    assert Recipe.from_json(_recipe([0.1] * 10, n=10)).weights == [0.1] * 10
    assert Recipe.from_json(_recipe(None, crossover=2)).crossover == 2
    nan = _recipe([1, 0]).replace("[1, 0]", "[NaN, 1]")
    with pytest.raises(PolychromeError):
        Recipe.from_json(nan)


def test_cli_mix_with_huge_weights(tmp_path: Path, capsys):
    add_model_version(save_tiny("stargan", tmp_path / "star"), "tiny-star")
    src = write_picture(tmp_path / "in.png", 0)
    out = tmp_path / "m.png"
    code = main(["mix", "tiny-star", str(src), "--style", "ink=1e308", "--style", "neon=1e308",
                 "-o", str(out), "--json"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(printed)["weights"] == [0.5, 0.5]
    meta = read_png_metadata(out)
    assert regenerate_style(meta, src).array.shape[2] == 3  # its recipe reads back
    for weight, words in (("neon=1e999", "finite"), ("neon=-1e308", ">= 0"),
                          ("neon=nan", "finite")):
        code = main(["mix", "tiny-star", str(src), "--style", weight, "-o", str(out)])
        printed, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2 and printed == "" and len(lines) == 1, err
        assert lines[0].startswith("error: ") and words in lines[0]


def test_a_png_with_a_forged_recipe_is_refused(tmp_path: Path, capsys):
    from polychrome.imageio import encode_png

    add_model_version(save_tiny("stargan", tmp_path / "star"), "tiny-star")
    src = write_picture(tmp_path / "in.png", 0)
    out = tmp_path / "m.png"
    assert main(["mix", "tiny-star", str(src), "--style", "ink", "--style", "neon",
                 "-o", str(out)]) == 0
    capsys.readouterr()
    meta = read_png_metadata(out)
    forged = json.loads(meta["recipe"])
    forged["weights"] = [1e308, 1e308]
    meta["recipe"] = json.dumps(forged)
    from polychrome.imageio import decode_image

    bad = tmp_path / "forged.png"
    bad.write_bytes(encode_png(decode_image(out), meta))
    with pytest.raises(PolychromeError, match="weights") as err:
        regenerate_style(read_png_metadata(bad), src)
    assert err.value.code == "bad_metadata"
