"""The restoration family: pix2pix networks, training pairs, the shared loop, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polychrome.colour import chroma_to_rgb, luma, rgb_to_lab, rgb_to_ycbcr
from polychrome.data.degrade import degrade_sr, downscale, gaussian_blur, random_masks
from polychrome.errors import PolychromeError
from polychrome.models import GANModel, create_model
from polychrome.models.zoo.pix2pix import pyramid_fill
from polychrome.training import TrainConfig, export_model, train
from polychrome.training.checkpoint import find_checkpoint, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

R = 32
TINY = dict(width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)


def tiny(task: str, **kw) -> GANModel:
    torch.manual_seed(0)
    return create_model("pix2pix", task=task, resolution=R, **{**TINY, **kw})


def _perturb(model: GANModel) -> None:
    """Move every generator weight away from its init (heads start at zero)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("h,w", [(16, 16), (24, 40), (8, 56)])
def test_sr_shapes_and_untrained_is_bicubic(h, w):
    m = tiny("sr", scales=[2, 4]).eval()
    x = torch.rand(2, 3, h, w) * 2 - 1
    for s in (2, 4):
        y = m.restore(m.prepare(x), s)
        assert y.shape == (2, 3, h * s, w * s)
        bicubic = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        assert torch.equal(y, bicubic)  # zero-initialised heads: exactly the base
    _perturb(m)
    y = m.restore(x, 2)
    assert torch.isfinite(y).all() and not torch.equal(y, F.interpolate(
        x, scale_factor=2, mode="bicubic", align_corners=False))
    with pytest.raises(PolychromeError, match="x3"):
        m.restore(x, 3)


def test_inpaint_keeps_everything_outside_the_mask():
    m = tiny("inpaint").eval()
    _perturb(m)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    mask = random_masks(2, 32, 48, torch.Generator().manual_seed(0))
    y = m.restore(m.prepare(x, mask))
    assert y.shape == x.shape and torch.isfinite(y).all()
    keep = mask.expand_as(x) == 0
    assert torch.equal(y[keep], x[keep])
    assert not torch.allclose(y[~keep], x[~keep])


def test_colorize_keeps_the_luma_and_stays_in_gamut():
    m = tiny("colorize").eval()
    _perturb(m)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y_in = m.prepare(x)
    assert y_in.shape == (2, 1, 32, 32)
    out = m.restore(y_in)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    assert (luma(out) - y_in).abs().max() < 1e-5
    assert out.std(dim=1).mean() > 1e-3  # it gives colour, not grey


def test_chroma_to_rgb_keeps_luma_even_when_clipping():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, 16, 16, generator=g)
    ycc = rgb_to_ycbcr(rgb)
    back = chroma_to_rgb(ycc[:, :1], ycc[:, 1:])
    assert torch.allclose(back, rgb, atol=1e-5)  # in gamut: an exact round trip
    wild = chroma_to_rgb(ycc[:, :1], torch.full_like(ycc[:, 1:], 0.5))  # far outside
    assert wild.min() >= -1e-6 and wild.max() <= 1 + 1e-6
    assert torch.allclose(luma(wild), ycc[:, :1], atol=1e-5)


def test_lab_known_values():
    white = torch.ones(1, 3, 1, 1)
    lab = rgb_to_lab(white)[0, :, 0, 0]
    assert abs(lab[0] - 100) < 0.01 and abs(lab[1]) < 0.01 and abs(lab[2]) < 0.01
    red = rgb_to_lab(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20]), atol=0.05)


def test_pyramid_fill_keeps_known_pixels_and_fills_smoothly():
    x = torch.linspace(-1, 1, 40).view(1, 1, 1, 40).expand(1, 3, 30, 40).clone()
    mask = torch.zeros(1, 1, 30, 40)
    mask[..., 10:20, 12:30] = 1
    y = pyramid_fill(x, mask)
    assert torch.equal(y[mask.expand_as(y) == 0], x[mask.expand_as(x) == 0])
    hole = mask.expand_as(y) == 1
    assert (y[hole] - x[hole]).abs().max() < 0.35  # a ramp is filled near the ramp
    assert torch.equal(pyramid_fill(x, torch.zeros_like(mask)), x)


def test_masks_cover_5_to_40_percent_and_are_deterministic():
    a = random_masks(16, 64, 96, torch.Generator().manual_seed(3))
    b = random_masks(16, 64, 96, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (16, 1, 64, 96)
    cover = a.mean(dim=(1, 2, 3))
    assert (cover >= 0.05).all() and (cover <= 0.40).all()
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_degrade_sr_clean_is_the_antialiased_downscale_in_8_bits():
    hr = torch.rand(3, 3, 32, 32) * 2 - 1
    lr = degrade_sr(hr, 4, torch.Generator().manual_seed(0), mode="clean")
    assert lr.shape == (3, 3, 8, 8)
    want = torch.round((downscale(hr, 4).clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    assert torch.equal(lr, want)
    mild1 = degrade_sr(hr, 2, torch.Generator().manual_seed(5), mode="mild")
    mild2 = degrade_sr(hr, 2, torch.Generator().manual_seed(5), mode="mild")
    assert torch.equal(mild1, mild2) and mild1.shape == (3, 3, 16, 16)
    levels = (mild1 + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    with pytest.raises(ValueError):
        degrade_sr(hr, 2, torch.Generator(), mode="heavy")


def test_gaussian_blur_per_picture():
    x = torch.zeros(2, 1, 9, 9)
    x[:, :, 4, 4] = 1
    y = gaussian_blur(x, torch.tensor([0.0, 1.0]))
    assert torch.equal(y[0], x[0])  # sigma 0: untouched
    assert abs(float(y[1].sum()) - 1) < 1e-5 and y[1, 0, 4, 4] < 0.2


@pytest.mark.parametrize("bad,match", [
    (dict(task="deblur"), "task"),
    (dict(task="sr", scales=[5]), "scales"),
    (dict(task="sr", scales=[2, 2]), "scales"),
    (dict(task="inpaint", scales=[2]), "scales"),
    (dict(task="sr", scales=[4], resolution=16, n_down=3), "too deep"),
    (dict(norm="batch"), "norm"),
])
def test_bad_configs_are_refused(bad, match):
    kw = {**TINY, "resolution": R, **bad}
    with pytest.raises(PolychromeError, match=match):
        create_model("pix2pix", **kw)


# -- training on the shared loop ------------------------------------------------------------
def _packed(tmp_path):
    from data.test_crops import make_sized_dataset
    from polychrome.data.crops import load_crops_dir

    return load_crops_dir(make_sized_dataset(tmp_path / "d" / "1", domains=("photo",)), R,
                          (R, 64))


def _cfg(task: str, **kw) -> TrainConfig:
    mc = {**TINY, "task": task}
    if task == "sr":
        mc["scales"] = [2, 4]
    base = dict(model="pix2pix", model_config=mc, dataset="toy", fit="crops", resolution=R,
                scale=[R, 64], steps=4, batch_size=2, checkpoint_every=2, sample_every=2,
                log_every=1, seed=0, sample_cols=2,
                trainer_options={"degrade": "mild"} if task == "sr" else {})
    base.update(kw)
    return TrainConfig(**base)


def _stop_after(n: int):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > n

    return should_stop


@pytest.mark.parametrize("task", ["sr", "inpaint", "colorize"])
def test_trains_resumes_exactly_and_exports(task, tmp_path):
    packed = _packed(tmp_path)
    cfg = _cfg(task)
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    assert straight.step == 4 and all(v == v for v in straight.final.values())
    half = train(cfg, packed=packed, run_dir=tmp_path / "split", tensorboard=False,
                 should_stop=_stop_after(2))
    assert half.stopped and half.step == 2
    train(resume=tmp_path / "split", packed=packed, tensorboard=False)
    a = load_checkpoint(find_checkpoint(tmp_path / "straight", "latest"))[0]
    b = load_checkpoint(find_checkpoint(tmp_path / "split", "latest"))[0]
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    # both networks moved (the zero-initialised heads too)
    torch.manual_seed(0)
    init = create_model("pix2pix", resolution=R, **cfg.model_config)
    for net_name, net in init.named_children():
        assert any(not torch.equal(v, a[f"model.{net_name}.{k}"])
                   for k, v in net.state_dict().items()), net_name
    assert sorted(p.name for p in (tmp_path / "straight" / "samples").glob("*.png")) == [
        "step-000000.png", "step-000002.png", "step-000004.png"]
    model = GANModel.from_pretrained(export_model(tmp_path / "straight", tmp_path / "out"))
    assert model.family == "restoration" and model.config.task == task
    assert model.meta["fit"] == "crops" and model.loaded_modules == ("generator",)


def test_unknown_trainer_options_and_bad_values_are_refused(tmp_path):
    packed = _packed(tmp_path)
    for opts, match in (({"lambda_l2": 1}, "unknown trainer option"),
                        ({"degrade": "heavy"}, "degrade"),
                        ({"mask_area": [0.5, 0.2]}, "mask_area")):
        with pytest.raises(PolychromeError, match=match):
            train(_cfg("inpaint", trainer_options=opts), packed=packed,
                  run_dir=tmp_path / f"bad-{len(str(opts))}", tensorboard=False)


def test_sr_trains_toward_the_truth(tmp_path):
    """A few dozen steps on smooth pictures already beat bicubic on the training crops."""
    packed = _packed(tmp_path)
    cfg = _cfg("sr", steps=40, batch_size=4, checkpoint_every=0, sample_every=0,
               lr_g=1e-3, trainer_options={"degrade": "clean", "lambda_adv": 0.0})
    train(cfg, packed=packed, run_dir=tmp_path / "run", tensorboard=False)
    model = GANModel.from_pretrained(export_model(tmp_path / "run", tmp_path / "out")).eval()
    x = packed.gather(torch.arange(min(8, len(packed))), 123).float() / 127.5 - 1
    lr = degrade_sr(x, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.restore(lr, 2).clamp(-1, 1)
    bicubic = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert (ours - x).abs().mean() < (bicubic - x).abs().mean()


def test_restoration_is_not_a_noise_or_translation_model():
    m = tiny("sr")
    assert m.family == "restoration" and m.inference_modules == ("generator",)
    assert np.prod(m.multiple) == 4
