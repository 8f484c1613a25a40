"""benchmarks/native_size.py and benchmarks/photo_quality.py run end to end on tiny inputs.

Figures from these runs mean nothing (an untrained model, a few pictures): only the
scripts' mechanics, outputs and error paths are checked here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.stylehelpers import tiny
from polychrome.data.cache import load_packed

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import native_size  # noqa: E402
import photo_quality  # noqa: E402

STYLES = ["ink", "neon", "photo"]
SIZES = [(40, 64), (64, 40), (36, 50), (48, 48), (30, 60)]  # (h, w)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory) -> Path:
    """A tiny untrained translator as crops-mode training exports it."""
    model = tiny("stargan")
    meta = {**model.meta, "styles": STYLES, "fit": "crops", "crop": 16, "scale": [16, 48]}
    directory = tmp_path_factory.mktemp("models") / "native"
    model.save_pretrained(directory, modules=model.inference_modules, meta=meta)
    return directory


def make_dataset(home: Path, name: str = "styles", stems: int = 12) -> Path:
    """<home>/datasets/<name>/1: the same subjects in every style folder, varied sizes."""
    root = home / "datasets" / name / "1"
    rng = np.random.default_rng(0)
    entries = []
    for d, domain in enumerate(STYLES):
        (root / "images" / domain).mkdir(parents=True, exist_ok=True)
        for i in range(stems):
            h, w = SIZES[i % len(SIZES)]
            arr = rng.integers(0, 80, (h, w, 3)) + np.array([40 * d, 160 - 60 * d, 90])
            rel = f"images/{domain}/pic-{i:02d}.png"
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / rel)
            entries.append({"file": rel, "domain": domain, "width": w, "height": h})
    (root / "manifest.json").write_text(json.dumps(
        {"name": name, "version": 1, "domains": {d: stems for d in STYLES},
         "images": entries}))
    return root


# -- pieces -----------------------------------------------------------------------------------
def test_colour_transfer_reaches_the_target_statistics():
    rng = np.random.default_rng(1)
    src = rng.integers(30, 220, (40, 50, 3), dtype=np.uint8)
    same = photo_quality.colour_transfer(src, *photo_quality.lab_stats([src], stride=1))
    assert np.abs(same.astype(int) - src).max() <= 1  # its own statistics: unchanged
    target = (rng.integers(0, 60, (30, 30, 3)) + np.array([150, 90, 20])).astype(np.uint8)
    mean, std = photo_quality.lab_stats([target], stride=1)
    out = photo_quality.colour_transfer(src, mean, std)
    got = photo_quality.rgb_to_lab(out).reshape(-1, 3)
    assert np.allclose(got.mean(0), mean, atol=0.02)
    assert np.allclose(got.std(0), std, rtol=0.15, atol=0.01)


def test_luma_ssim():
    a = np.random.default_rng(2).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    assert photo_quality.luma_ssim(a, a) == pytest.approx(1.0)
    assert photo_quality.luma_ssim(a, 255 - a) < 0.5


def test_synthetic_photo_and_sizes():
    arr = native_size.synthetic_photo(57, 31)
    assert arr.shape == (31, 57, 3) and arr.dtype == np.uint8 and arr.std() > 10
    assert native_size.parse_size("1155x866") == (1155, 866)
    with pytest.raises(Exception, match="WIDTHxHEIGHT"):
        native_size.parse_size("big")


# -- end to end -------------------------------------------------------------------------------
@pytest.mark.slow  # two child processes
def test_native_size_end_to_end(native_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLYCHROME_TILE_STATS_MAX_PIXELS", "2048")
    out = tmp_path / "ns.json"
    rc = native_size.main(["--model", str(native_dir), "--threads", "1", "--repeats", "2",
                           "--large-repeats", "1", "--sizes", "40x30,64x48",
                           "--rss-size", "64x48", "--psnr-size", "48x40",
                           "--stats-size", "96x80", "--format", "png", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["commit"] and report["machine"]["threads"] == 1 and report["style"] == "ink"
    assert [(r["width"], r["height"], r["repeats"]) for r in report["timing"]] == \
        [(40, 30, 2), (64, 48, 2)]
    assert report["rss"]["restyle_mib"] >= report["rss"]["baseline_mib"] > 0
    cases = [r["stats"] for r in report["psnr"]]
    assert cases == ["whole", "downscaled", "downscaled"]
    assert all(r["psnr_db"] > 0 for r in report["psnr"])
    assert "| 40x30 (0.0 MP, png) |" in capsys.readouterr().out


def test_photo_quality_end_to_end(native_dir, polychrome_home, tmp_path, capsys):
    make_dataset(polychrome_home)
    paths = {k: tmp_path / f"pq.{k}" for k in ("json", "md", "png")}
    argv = ["--model", str(native_dir), "--dataset", "styles", "--n", "3", "--threads", "1",
            "--evaluator-steps", "5", "--ct-style", "neon", "--cell", "32",
            "--json", str(paths["json"]), "--md", str(paths["md"]), "--grid", str(paths["png"])]
    assert photo_quality.main(argv) == 0
    report = json.loads(paths["json"].read_text())
    summary = report["summary"]
    assert set(summary["per_target"]) == {"ink", "neon"}  # every style but the source
    ident = summary["overall"]["identity"]
    assert ident["ssim"] == pytest.approx(1.0) and ident["feat"] == 0.0
    n = report["n_source_pictures"]
    assert 1 <= n <= 3 and summary["overall"]["GAN"]["n"] == 2 * n
    assert all(r["file"].startswith("images/photo/") for r in report["records"])
    held = {r["file"] for r in report["records"]}
    train = load_packed("styles", 16, "crops", scale=[16, 48]).split("train").files
    assert not held & set(train)  # held-out pictures only
    printed = capsys.readouterr().out
    assert printed.strip() == paths["md"].read_text().strip()
    assert "| **all** | colour transfer |" in printed
    grid = Image.open(paths["png"])
    assert grid.width == 4 * (32 + 4) + 4  # source, 2 GAN styles, 1 colour transfer
    # the evaluator was saved beside the dataset and is reused
    saved = polychrome_home / "datasets" / "styles" / "1" / "evaluator" / "crops-16-16-48"
    assert (saved / "config.json").is_file()
    assert photo_quality.main(argv + ["--from", "all", "--grid-rows", "0"]) == 0


def test_user_mistakes_are_one_line(native_dir, polychrome_home, capsys):
    make_dataset(polychrome_home)
    assert photo_quality.main(["--model", str(native_dir), "--dataset", "nope"]) == 2
    assert photo_quality.main(["--model", "no-such-model", "--dataset", "styles"]) == 2
    assert photo_quality.main(["--model", str(native_dir), "--dataset", "styles",
                               "--from", "clipart"]) == 2
    assert native_size.main(["--model", "no-such-model"]) == 2
    assert native_size.main(["--model", str(native_dir), "--style", "oil"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 5 and "no-such-model" in lines[1] and "clipart" in lines[2]
