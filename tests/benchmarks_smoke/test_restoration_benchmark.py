"""benchmarks/restoration.py runs end to end on tiny untrained models and tiny photos.

Figures from these runs mean nothing: only the script's mechanics, outputs and error paths
are checked here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polychrome.models import create_model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import restoration  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)
SIZES = [(48, 64), (56, 40), (40, 40)]  # (h, w)


def photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    arr = np.stack([120 + 100 * np.sin(5 * xx + seed), 120 + 90 * np.cos(6 * yy),
                    90 + 80 * np.sin(3 * (xx + yy))], -1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("restoration")
    paths = {}
    for task, kw in (("sr", {"scales": [2, 4]}), ("inpaint", {}), ("colorize", {})):
        torch.manual_seed(0)
        m = create_model("pix2pix", task=task, **TINY, **kw).eval()
        paths[task] = m.save_pretrained(root / f"tiny-{task}", modules=m.inference_modules,
                                        meta={})
    held = root / "heldout"
    train = root / "train" / "photo"
    held.mkdir()
    train.mkdir(parents=True)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(photo(h, w, i)).save(held / f"held-{i}.jpg", quality=95)
        Image.fromarray(photo(h, w, 10 + i)).save(train / f"train-{i}.png")
    paths.update(heldout=held, train=root / "train", out=root / "out")
    return paths


def test_end_to_end(setup, capsys):
    out = setup["out"]
    argv = ["--sr", str(setup["sr"]), "--inpaint", str(setup["inpaint"]),
            "--colorize", str(setup["colorize"]), "--heldout", str(setup["heldout"]),
            "--train", str(setup["train"]), "--threads", "1", "--repeats", "1",
            "--speed-side", "64", "--crop", "32", "--grid-photos", "held-0.jpg,held-2.jpg",
            "--json", str(out / "r.json"), "--md", str(out / "r.md"),
            "--grid-dir", str(out / "grids")]
    assert restoration.main(argv) == 0
    report = json.loads((out / "r.json").read_text())
    assert report["commit"] and report["machine"]["threads"] == 1 and report["command"]
    assert report["n_photos"] == 3 and report["grid_photos"] == ["held-0.jpg", "held-2.jpg"]
    assert set(report["tasks"]) == {"sr", "inpaint", "colorize"}
    sr = report["tasks"]["sr"]
    assert len(sr["records"]) == 6 and set(sr["summary"]) == {"x2", "x4"}
    assert len(report["tasks"]["inpaint"]["records"]) == 3
    col = report["tasks"]["colorize"]
    assert col["mean_ab"] == report["mean_ab"] and "3 photos" in report["mean_ab_from"]
    assert all(len(t["goals"]) >= 1 for t in report["tasks"].values())
    speed = {(r["task"], r["scale"]): r for r in report["speed"]}
    assert set(speed) == {("sr", 2), ("sr", 4), ("inpaint", 1), ("colorize", 1)}
    assert speed[("sr", 4)]["input"] == "16x16" and speed[("sr", 4)]["output"] == "64x64"
    assert speed[("inpaint", 1)]["harmonic_fill_p50_s"] > 0
    printed = capsys.readouterr().out
    assert printed.strip() == (out / "r.md").read_text().strip()
    assert "### goals" in printed and "| sr x2 | 32x32 jpeg | 64x64 |" in printed
    for name, cols in (("sr-x2", 5), ("sr-x4", 5), ("inpaint", 5), ("colorize", 4)):
        grid = Image.open(out / "grids" / f"{name}.jpg")
        assert grid.width == cols * (32 + 4) + 4  # columns of 32 px crops
        assert grid.height == 16 + 4 + 2 * (32 + 14 + 4) + 4  # two photos


def test_pieces():
    truth = photo(64, 80, 3)
    holes = np.zeros((64, 80), bool)
    holes[10:30, 20:50] = True
    top, left = restoration.pick_region(truth, 32, holes)
    frac = holes[top:top + 32, left:left + 32].mean()
    assert 0.15 <= frac <= 0.6
    top, left = restoration.pick_region(truth, 32, multiple=4)
    assert top % 4 == 0 and left % 4 == 0
    sq = restoration.centre_square(truth, 16)
    assert sq.shape == (16, 16, 3)


def test_user_mistakes_are_one_line(setup, tmp_path, capsys):
    base = ["--heldout", str(setup["heldout"]), "--train", str(setup["train"]),
            "--no-speed", "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"),
            "--grid-dir", str(tmp_path)]
    missing = str(tmp_path / "photo-sr")
    restoration.DEFAULT_MODELS["sr"], old = Path(missing), restoration.DEFAULT_MODELS["sr"]
    try:
        assert restoration.main(["--tasks", "sr", "--sr", missing, *base]) == 2
    finally:
        restoration.DEFAULT_MODELS["sr"] = old
    assert restoration.main(["--tasks", "sr", "--sr", str(setup["inpaint"]), *base]) == 2
    assert restoration.main(["--tasks", "sr,deblur", *base]) == 2
    assert restoration.main(["--tasks", "sr", "--sr", str(setup["sr"]), "--heldout",
                             str(tmp_path / "none"), *base[2:]]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 4
    assert "train the bundled sr model first" in err[0] and "model for inpaint" in err[1]


def test_readme_table_renders_every_task(setup):
    out = setup["out"] / "readme"
    argv = ["--sr", str(setup["sr"]), "--inpaint", str(setup["inpaint"]),
            "--colorize", str(setup["colorize"]), "--heldout", str(setup["heldout"]),
            "--train", str(setup["train"]), "--threads", "1", "--repeats", "1",
            "--speed-side", "64", "--crop", "32", "--json", str(out / "r.json"),
            "--md", str(out / "r.md"), "--grid-dir", str(out / "grids")]
    assert restoration.main(argv) == 0
    text = restoration.readme_table(json.loads((out / "r.json").read_text()))
    assert text.startswith(restoration.README_BEGIN) and text.endswith(restoration.README_END)
    for row in ("| sr x2 |", "| sr x4 |", "| inpaint |", "| colorize |", "goal <= 2 s"):
        assert row in text
