"""Restoration metrics: measures with known answers, the harmonic fill, the evaluation of tiny
models, and `polychrome eval` on restoration models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from polychrome.cli.main import main
from polychrome.data.degrade import degrade_sr
from polychrome.imageio import from_tensor, to_tensor
from polychrome.metrics import restoration as R
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version, show_model
from polychrome.pipelines.restore import grey_u8, restore_array

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)


def tiny(task: str, **kw):
    torch.manual_seed(0)
    return create_model("pix2pix", task=task, **{**TINY, **kw}).eval()


def perturbed(task: str, **kw):
    """A tiny model that is not bicubic / the pyramid fill (its heads are no longer zero)."""
    m = tiny(task, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.generator.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour field with a few edges and some noise: photo-like enough."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    arr = np.stack([120 + 100 * np.sin(3 * xx + seed), 120 + 90 * np.cos(4 * yy),
                    90 + 80 * np.sin(2 * (xx + yy))], -1)
    arr[h // 3:h // 2, w // 4:w // 2] = (230, 40, 40)
    arr += rng.normal(0, 6, arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


# -- basic measures ---------------------------------------------------------------------------
def test_psnr_and_ssim_of_identical_pictures():
    a = photo(24, 30)
    assert R.psnr(a, a) == math.inf
    y = R.luma_y(a)
    assert R.ssim(y, y) == pytest.approx(1.0)
    assert R.l1(a, a) == 0.0


@pytest.mark.parametrize("offset", [1, 5, 20])
def test_psnr_of_a_constant_offset_follows_the_formula(offset):
    a = np.full((16, 20, 3), 100, np.uint8)
    b = a + np.uint8(offset)
    assert R.psnr(a, b) == pytest.approx(20 * math.log10(255 / offset))
    assert R.l1(a, b) == pytest.approx(offset)


def test_psnr_and_l1_inside_a_mask_ignore_the_rest():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True
    b[mask] = 10
    b[~mask] = 200  # outside the mask: does not count
    assert R.psnr(a, b, mask=mask) == pytest.approx(20 * math.log10(255 / 10))
    assert R.l1(a, b, mask=mask) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="no pixel"):
        R.psnr(a, b, mask=np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="shape"):
        R.psnr(a, b[:9])


def test_ssim_known_values():
    # Constant pictures: only the luminance term is left (variances and covariance are 0).
    a, b = np.full((20, 20), 100.0), np.full((20, 20), 110.0)
    c1 = (0.01 * 255) ** 2
    assert R.ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (40, 50))
    noisy = x + rng.normal(0, 30, x.shape)
    assert R.ssim(x, noisy) == pytest.approx(R.ssim(noisy, x))  # symmetric
    assert 0 < R.ssim(x, noisy) < 0.99
    # the same definition as the translation metrics' SSIM (Gaussian window, valid part)
    from polychrome.metrics.translation import ssim as ssim_nchw

    t = [torch.from_numpy(v)[None, None] for v in (x, noisy)]
    assert R.ssim(x, noisy) == pytest.approx(float(ssim_nchw(*t, data_range=255.0)[0]))
    assert R.ssim(x[:7, :9], noisy[:7, :9]) == pytest.approx(
        float(ssim_nchw(t[0][..., :7, :9], t[1][..., :7, :9], data_range=255.0)[0]))


def test_luma_is_bt601_full_range():
    arr = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    assert R.luma_y(arr)[0].tolist() == pytest.approx([76.245, 149.685, 29.07, 255.0])


def test_border_and_multiple_crops():
    a = np.zeros((10, 13, 3))
    assert R.crop_border(a, 0).shape == (10, 13, 3)
    assert R.crop_border(a, 2).shape == (6, 9, 3)
    assert R.crop_border(a[..., 0], 4).shape == (2, 5)
    with pytest.raises(ValueError):
        R.crop_border(a, 5)
    assert R.crop_to_multiple(a, 4).shape == (8, 12, 3)
    assert R.crop_to_multiple(a, 2).shape == (10, 12, 3)
    truth = photo(30, 43)
    figs, pics = R.sr_case(tiny("sr", scales=[2, 4]), truth, 4)
    assert (figs["width"], figs["height"]) == (40, 28)
    assert pics["input"].shape == (7, 10, 3)
    assert all(pics[k].shape == (28, 40, 3) for k in ("bicubic", "lanczos", "ours", "truth"))
    # the figures are taken inside a border of s px
    assert figs["methods"]["bicubic"]["psnr_y"] == pytest.approx(R.psnr(
        R.crop_border(R.luma_y(pics["bicubic"]), 4), R.crop_border(R.luma_y(truth[:28, :40]), 4)))


# -- super-resolution -------------------------------------------------------------------------
def test_the_small_picture_is_trainings_clean_degradation():
    truth = photo(32, 48)
    small = R.downscale_u8(truth, 4)
    x = to_tensor(truth)[None]
    lr = degrade_sr(x, 4, torch.Generator().manual_seed(0), mode="clean")
    assert np.array_equal(small, from_tensor(lr[0]))
    assert R.pil_upscale(small, 4).shape == (32, 48, 3)
    assert R.pil_upscale(small, 4, "lanczos").shape == (32, 48, 3)


def test_untrained_sr_is_bicubic_and_figures_are_consistent():
    model = tiny("sr", scales=[2, 4])
    res = R.evaluate_restoration(model, [("a.png", photo(48, 64)), ("b.png", photo(40, 52, 1))])
    assert res["task"] == "sr" and res["scales"] == [2, 4] and res["n_photos"] == 2
    assert len(res["records"]) == 4 and set(res["summary"]) == {"x2", "x4"}
    for r in res["records"]:
        m = r["methods"]
        # torch's bicubic (a = -0.75) vs PIL's (a = -0.5): near, not equal
        assert abs(m["ours"]["psnr_y"] - m["bicubic"]["psnr_y"]) < 1.0
        assert r["gain_db"] == pytest.approx(m["ours"]["psnr_y"] - m["bicubic"]["psnr_y"])
    blk = res["summary"]["x2"]
    ours = [r["methods"]["ours"]["psnr_y"] for r in res["records"] if r["scale"] == 2]
    assert blk["methods"]["ours"]["psnr_y"] == pytest.approx(np.mean(ours))
    assert set(res["goals"]) == {"x2 Y-PSNR gain over bicubic", "x4 Y-PSNR gain over bicubic"}
    assert not any(g["met"] for g in res["goals"].values())
    only = R.evaluate_restoration(model, [("a.png", photo(48, 64))], scales=[4])
    assert set(only["summary"]) == {"x4"}
    with pytest.raises(Exception, match="x3"):
        R.evaluate_restoration(model, [("a.png", photo(48, 64))], scales=[3])


# -- inpainting -------------------------------------------------------------------------------
def test_eval_masks_are_fixed_per_photo():
    a = R.eval_mask("photos/one.jpg", 60, 80)
    assert a.dtype == bool and a.shape == (60, 80) and 0.05 <= a.mean() <= 0.40
    assert np.array_equal(a, R.eval_mask("elsewhere/one.jpg", 60, 80))  # by file stem
    assert not np.array_equal(a, R.eval_mask("two.jpg", 60, 80))
    assert not np.array_equal(a, R.eval_mask("one.jpg", 60, 80, seed=1))
    assert R.photo_seed("one.jpg") == R.photo_seed("one.png")


def test_harmonic_fill_of_a_linear_ramp_is_exact():
    h, w = 40, 56
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = 20 + 2.5 * xx + 1.5 * yy  # discrete harmonic: each pixel the mean of its neighbours
    holes = np.zeros((h, w), bool)
    holes[5:30, 8:40] = True  # inside the picture: the known ring is the boundary condition
    holes[33:37, 10:50] = True
    img = torch.from_numpy(np.where(holes, 0.0, ramp))[None, None]
    out, facts = R.harmonic_fill_tensor(img, torch.from_numpy(holes)[None, None].double(),
                                        tol=1e-6)
    assert facts["converged"] and facts["iterations"] < 60
    assert np.abs(out[0, 0].numpy() - ramp).max() < 1e-4
    arr = np.repeat((10 + 2 * xx + 3 * yy).astype(np.uint8)[..., None], 3, axis=2)
    assert np.array_equal(R.harmonic_fill(R.show_holes(arr, holes, (0, 0, 0)), holes), arr)


def _direct_harmonic(values: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """The same equations solved directly (sparse LU): 4-neighbour average in the holes, an
    edge pixel averaging the neighbours it has."""
    h, w = holes.shape
    idx = -np.ones((h, w), int)
    idx[holes] = np.arange(int(holes.sum()))
    n = int(holes.sum())
    a = lil_matrix((n, n))
    b = np.zeros(n)
    for y, x in zip(*np.nonzero(holes), strict=True):
        k = idx[y, x]
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, xx = y + dy, x + dx
            if not (0 <= yy < h and 0 <= xx < w):
                continue
            a[k, k] += 1
            if holes[yy, xx]:
                a[k, idx[yy, xx]] -= 1
            else:
                b[k] += values[yy, xx]
    out = values.astype(np.float64).copy()
    out[holes] = spsolve(a.tocsr(), b)
    return out


def test_harmonic_fill_matches_a_direct_solve():
    arr = photo(45, 61, seed=3)
    holes = R.eval_mask("direct.png", 45, 61, seed=2)
    holes[:6, :9] = True  # a hole at the picture's corner: edge pixels too
    x = torch.from_numpy(arr.astype(np.float64)).permute(2, 0, 1)[None]
    out, facts = R.harmonic_fill_tensor(x, torch.from_numpy(holes)[None, None].double(),
                                        tol=1e-7)
    assert facts["converged"]
    for c in range(3):
        want = _direct_harmonic(arr[..., c].astype(np.float64), holes)
        assert np.abs(out[0, c].numpy() - want).max() < 1e-4
    # the default tolerance (float32) is within a hundredth of a level
    fast = R.harmonic_fill_tensor(x.float(), torch.from_numpy(holes)[None, None].float())[0]
    assert (fast.double() - out).abs().max() < 0.02


def test_harmonic_fill_keeps_known_pixels_and_refuses_no_boundary():
    arr = photo(30, 30)
    holes = R.eval_mask("k.png", 30, 30)
    out = R.harmonic_fill(arr, holes)
    assert np.array_equal(out[~holes], arr[~holes])
    assert np.array_equal(R.harmonic_fill(arr, np.zeros((30, 30), bool)), arr)
    with pytest.raises(ValueError, match="all hole"):
        R.harmonic_fill(arr, np.ones((30, 30), bool))


def test_untrained_inpaint_is_the_pyramid_fill():
    model = tiny("inpaint")
    truth = photo(48, 64)
    res = R.evaluate_restoration(model, [("p.png", truth)], seed=3)
    r = res["records"][0]
    assert r["methods"]["ours"] == r["methods"]["pyramid"]  # exactly
    holes = R.eval_mask("p.png", 48, 64, seed=3)
    assert r["mask_fraction"] == pytest.approx(holes.mean())
    given = R.show_holes(truth, holes, (0, 0, 0))
    ours, _ = restore_array(model, given, holes=holes)
    assert np.array_equal(ours, R.pyramid_fill_u8(given, holes))
    assert r["methods"]["harmonic"]["psnr_mask"] == pytest.approx(
        R.psnr(R.harmonic_fill(given, holes), truth, mask=holes))
    assert res["summary"]["gain_db"] == pytest.approx(
        r["methods"]["ours"]["psnr_mask"] - r["methods"]["harmonic"]["psnr_mask"])
    assert list(res["goals"]) == ["PSNR gain in the holes over the harmonic fill"]


def test_the_model_never_sees_the_truth_inside_the_holes():
    model = perturbed("inpaint")
    truth = photo(32, 32)
    holes = R.eval_mask("x.png", 32, 32)
    other = truth.copy()
    other[holes] = 255 - other[holes]
    a, pa = R.inpaint_case(model, truth, holes)
    b, pb = R.inpaint_case(model, other, holes)
    for k in ("ours", "harmonic", "pyramid"):
        assert np.array_equal(pa[k], pb[k])


# -- colorization -----------------------------------------------------------------------------
def test_grey_has_no_colour():
    grey = grey_u8(photo(20, 24))
    assert R.colourfulness(grey) == 0.0
    assert np.abs(R.lab(grey)[..., 1:]).max() < 1e-3


def test_colourfulness_and_ab_error_known_values():
    # Half pure red, half pure green: rg = +-255, yb = 127.5 in both halves.
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[:, :2, 0] = 255
    arr[:, 2:, 1] = 255
    sd_rg, mean_rg, sd_yb, mean_yb = 255.0, 0.0, 0.0, 127.5
    want = math.hypot(sd_rg, sd_yb) + 0.3 * math.hypot(mean_rg, mean_yb)
    assert R.colourfulness(arr) == pytest.approx(want)
    ab = np.zeros((5, 6, 2))
    assert R.ab_error(ab, np.array([3.0, 4.0])) == pytest.approx(5.0)
    assert R.ab_error(ab, ab) == 0.0


def test_mean_chroma_and_lab_round_trip():
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:] = (200, 120, 60)
    a, b = R.mean_chroma([arr, arr[:4]])
    assert (a, b) == pytest.approx(tuple(R.lab(arr)[0, 0, 1:]))
    pic = photo(20, 30)
    assert np.abs(R.lab_to_rgb_u8(R.lab(pic)).astype(int) - pic).max() <= 1


def test_colorize_figures():
    model = perturbed("colorize")
    truth = photo(40, 48)
    mean_ab = (3.0, 10.0)
    res = R.evaluate_restoration(model, [("c.png", truth)], mean_ab=mean_ab)
    r = res["records"][0]
    ab_true = R.lab(truth)[..., 1:]
    assert r["methods"]["grey"]["ab_error"] == pytest.approx(
        np.mean(np.linalg.norm(ab_true, axis=-1)))
    assert r["methods"]["mean chroma"]["ab_error"] == pytest.approx(
        np.mean(np.linalg.norm(ab_true - np.array(mean_ab), axis=-1)))
    assert r["truth_colourfulness"] == pytest.approx(R.colourfulness(truth))
    assert r["colourfulness_ratio"] == pytest.approx(
        r["methods"]["ours"]["colourfulness"] / R.colourfulness(truth))
    assert r["luma_max_diff"] <= 1.0  # the luma is the input's, to 8-bit rounding
    assert set(res["goals"]) == {"ab error below mean chroma",
                                 "colourfulness within 25 % of the real photos'"}
    assert res["mean_ab"] == [3.0, 10.0]
    with pytest.raises(Exception, match="mean_ab"):
        R.evaluate_restoration(model, [("c.png", truth)])


def test_goals_decide_on_the_means():
    sr = {"x2": {"gain_db": 1.6}, "x4": {"gain_db": 0.9}}
    g = R.goals("sr", sr)
    assert g["x2 Y-PSNR gain over bicubic"]["met"] and not g["x4 Y-PSNR gain over bicubic"]["met"]
    assert R.goals("inpaint", {"gain_db": 2.0})[
        "PSNR gain in the holes over the harmonic fill"]["met"]
    col = {"methods": {"ours": {"ab_error": 9.0}, "mean chroma": {"ab_error": 10.0}},
           "colourfulness_ratio": 0.74}
    g = R.goals("colorize", col)
    assert g["ab error below mean chroma"]["met"]
    assert not g["colourfulness within 25 % of the real photos'"]["met"]


# -- polychrome eval --------------------------------------------------------------------------
def _save(model, directory: Path, meta: dict | None = None) -> Path:
    return model.save_pretrained(directory, modules=model.inference_modules, meta=meta or {})


@pytest.fixture
def photos_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "heldout"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 56), (48, 36)]):
        Image.fromarray(photo(h, w, seed=i)).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not a picture")
    return folder


def test_cli_eval_sr_json_is_one_object(tmp_path, photos_dir, capsys):
    directory = _save(tiny("sr", scales=[2, 4]), tmp_path / "sr")
    assert main(["eval", str(directory), "--images", str(photos_dir), "--scale", "2",
                 "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # exactly one JSON object, nothing else on stdout
    assert out.count("\n") == 1
    assert result["task"] == "sr" and result["scales"] == [2] and result["n_photos"] == 2
    assert {r["file"] for r in result["records"]} == {"p0.png", "p1.png"}
    assert set(result["summary"]["x2"]["methods"]) == {"ours", "bicubic", "lanczos"}
    assert main(["eval", str(directory), "--images", str(photos_dir)]) == 0
    text = capsys.readouterr().out
    assert "x4  bicubic" in text and "goal x2 Y-PSNR gain over bicubic" in text


def test_cli_eval_inpaint_records_on_the_card(tmp_path, photos_dir, capsys):
    add_model_version(_save(tiny("inpaint"), tmp_path / "inp"), "tiny-inpaint")
    assert main(["eval", "tiny-inpaint", "--images", str(photos_dir), "--seed", "4"]) == 0
    text = capsys.readouterr().out
    assert "harmonic" in text and "pyramid" in text and "gain over the harmonic fill" in text
    metrics = show_model("tiny-inpaint")["metrics"]
    (key, row), = [(k, v) for k, v in metrics.items() if k.startswith("restoration")]
    assert str(photos_dir) in key and row["n"] == 2 and "harmonic psnr_mask" in row


def test_cli_eval_colorize_needs_the_training_colours(tmp_path, photos_dir, capsys):
    directory = _save(perturbed("colorize"), tmp_path / "col")
    assert main(["eval", str(directory), "--images", str(photos_dir), "--json"]) == 2
    assert "--train-images" in capsys.readouterr().err
    assert main(["eval", str(directory), "--images", str(photos_dir), "--mean-chroma", "2,7",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_ab"] == [2.0, 7.0] and result["mean_ab_from"] == "given"
    train = tmp_path / "train" / "photo"
    train.mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), (200, 120, 60), np.uint8)).save(train / "t.png")
    assert main(["eval", str(directory), "--images", str(photos_dir), "--train-images",
                 str(tmp_path / "train"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    want = R.lab(np.full((1, 1, 3), (200, 120, 60), np.uint8))[0, 0, 1:]
    assert result["mean_ab"] == pytest.approx(list(want))
    assert main(["eval", str(directory), "--images", str(photos_dir), "--mean-chroma", "x"]) == 2


def _dataset(home: Path, name: str = "pics", n: int = 12) -> Path:
    root = home / "datasets" / name / "1"
    (root / "images" / "photo").mkdir(parents=True)
    entries = []
    for i in range(n):
        rel = f"images/photo/pic-{i:02d}.png"
        Image.fromarray(photo(24, 32, seed=i)).save(root / rel)
        entries.append({"file": rel, "domain": "photo", "width": 32, "height": 24})
    (root / "manifest.json").write_text(json.dumps(
        {"name": name, "version": 1, "domains": {"photo": n}, "images": entries}))
    return root


def test_cli_eval_defaults_to_the_training_datasets_heldout_split(tmp_path, polychrome_home,
                                                                   capsys):
    from polychrome.data.cache import heldout_stems
    from polychrome.settings import get_settings

    root = _dataset(polychrome_home)
    meta = {"dataset": "pics:1", "run": "run-1"}
    directory = _save(tiny("colorize"), tmp_path / "col", meta)
    run = get_settings().runs_dir / "run-1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("split: train\n")
    assert main(["eval", str(directory), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    files = [e["file"] for e in json.loads((root / "manifest.json").read_text())["images"]]
    held = heldout_stems(files)
    assert {Path(r["file"]).stem for r in result["records"]} == held
    assert result["images"] == "pics:1 (heldout)"
    assert "train" in result["mean_ab_from"]  # the mean chroma of the other pictures
    # trained on every picture: there is nothing held out to measure on
    (run / "config.yaml").write_text("split: all\n")
    assert main(["eval", str(directory)]) == 2
    assert "--images" in capsys.readouterr().err


def test_cli_eval_without_photos_is_one_line(tmp_path, capsys):
    directory = _save(tiny("sr", scales=[2]), tmp_path / "sr")
    assert main(["eval", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "--images DIR" in err and len([ln for ln in err.splitlines() if ln]) == 1
    gone = _save(tiny("sr", scales=[2]), tmp_path / "sr2", {"dataset": "nowhere:3"})
    assert main(["eval", str(gone)]) == 2
    assert "nowhere:3" in capsys.readouterr().err
    assert main(["eval", str(directory), "--images", str(tmp_path / "missing")]) == 2
    assert main(["eval", str(directory), "--images", str(tmp_path), "--scale", "4"]) == 2
