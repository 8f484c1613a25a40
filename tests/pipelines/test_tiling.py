"""The tiling engine and whole-picture normalisation statistics (tiny models, seconds)."""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import polychrome
from polychrome.errors import ModelError, PolychromeError
from polychrome.models import create_model
from polychrome.models.layers import (
    AdaIN,
    InstanceNorm2d,
    apply_norm_stats,
    make_norm2d,
    record_norm_stats,
)
from polychrome.models.zoo.stargan import StarGAN
from polychrome.pipelines import tiling
from polychrome.pipelines.tiling import (
    TileSettings,
    estimate_tiles,
    feather_weights,
    padded_size,
    plan_tiles,
    run_image_model,
)

EMOJI = Path(polychrome.__file__).parent / "assets" / "models" / "emoji-stargan"
SMALL_TILES = TileSettings(tile=32, overlap=16, context=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two pictures in [-1, 1], measured on the [0, 1] scale."""
    mse = ((a.double() - b.double()) / 2).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def picture(h: int, w: int, seed: int = 1) -> torch.Tensor:
    """Smooth shapes plus grain, like a photo: (1, 3, h, w) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g) * 2 - 1
    x = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.randn(1, 3, h, w, generator=g)).clamp(-1, 1)


def tiny_stargan() -> tuple[StarGAN, torch.Tensor]:
    # One bottleneck block each side (not the default two): a random network's receptive
    # field then mostly fits in 16 px of context (the default two need ~48 px: random
    # weights spread far more than trained ones, cf. the bundled test below).
    torch.manual_seed(0)
    model = create_model("stargan", resolution=16, num_domains=2, width=8, max_width=16,
                         style_dim=8, latent_dim=4, mapping_dim=8, mapping_shared_layers=1,
                         mapping_head_layers=1, e_width=8, e_max_width=16, d_width=8,
                         d_max_width=16, enc_blocks=1, dec_blocks=1).eval()
    s = torch.randn(1, 8, generator=torch.Generator().manual_seed(2))  # (1, style_dim)
    return model, s


def tiny_cyclegan():
    torch.manual_seed(0)
    return create_model("cyclegan", resolution=16, num_domains=2, width=8, n_blocks=2,
                        d_width=8).eval()


# -- the norm layer -----------------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
def test_without_provider_it_is_torch_instance_norm(affine):
    torch.manual_seed(0)
    ours, stock = InstanceNorm2d(6, affine=affine), nn.InstanceNorm2d(6, affine=affine)
    if affine:
        with torch.no_grad():
            ours.weight.normal_(1, 0.5)
            ours.bias.normal_()
    stock.load_state_dict(ours.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(stock.state_dict())
    x = torch.randn(3, 6, 9, 7) * 2 + 0.5
    assert torch.equal(ours(x), stock(x))
    assert isinstance(make_norm2d("instance", 4), InstanceNorm2d)
    assert isinstance(AdaIN(4, 2).norm, InstanceNorm2d)


@pytest.mark.parametrize("batch", [1, 2])
def test_record_then_apply_on_the_same_input_is_the_plain_forward(batch):
    model, s = tiny_stargan()
    x = torch.cat([picture(24, 20, seed=i) for i in range(batch)])  # (B, 3, 24, 20)
    with torch.inference_mode():
        plain = model.generator(x, s.expand(batch, -1))
        with record_norm_stats() as stats:
            recorded = model.generator(x, s.expand(batch, -1))
        with apply_norm_stats(stats):
            applied = model.generator(x, s.expand(batch, -1))
    assert torch.equal(recorded, plain)  # recording never changes the output
    norms = [m for m in model.generator.modules() if isinstance(m, InstanceNorm2d)]
    assert len(stats) == len(norms) and len(stats.stats) == len(norms)
    mean, var = stats.stats[id(norms[0])][0]
    assert mean.shape == var.shape == (batch, norms[0].num_features, 1, 1)
    # Recorded stats are reduced in another order than the fused kernel: ULP-level only.
    torch.testing.assert_close(applied, plain, atol=2e-5, rtol=0)


def test_apply_normalises_a_tile_like_the_whole_picture():
    torch.manual_seed(0)
    norm = InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        norm.weight.normal_(1, 0.5)
        norm.bias.normal_()
    x = torch.randn(1, 4, 16, 12) * 3 + 1
    with record_norm_stats() as stats:
        whole = norm(x)
    with apply_norm_stats(stats):
        part = norm(x[:, :, 4:10, 2:9])
    torch.testing.assert_close(part, whole[:, :, 4:10, 2:9], atol=1e-6, rtol=0)
    # Its own statistics would differ: the tile is not normalised on its own.
    assert not torch.allclose(norm(x[:, :, 4:10, 2:9]), whole[:, :, 4:10, 2:9], atol=1e-3)


def test_stats_from_another_forward_are_refused():
    a, b = InstanceNorm2d(3), InstanceNorm2d(3)
    x = torch.randn(1, 3, 5, 5)
    with record_norm_stats() as stats:
        a(x)
    with apply_norm_stats(stats), pytest.raises(ModelError) as err:
        b(x)
    assert err.value.code == "norm_stats_missing"
    with apply_norm_stats(stats), pytest.raises(ModelError) as err:
        a(x)
        a(x)  # a second call has nothing recorded
    assert err.value.code == "norm_stats_missing"


def test_provider_is_per_context_not_global():
    norm = InstanceNorm2d(2)
    x = torch.randn(1, 2, 4, 4)
    seen = []
    with record_norm_stats() as stats:
        # A thread (another request on the shared model) starts with no provider.
        t = threading.Thread(target=lambda: seen.append(norm(x)))
        t.start()
        t.join()
    assert len(stats) == 0 and torch.equal(seen[0], F.instance_norm(x))


# -- the plan -----------------------------------------------------------------------------
def test_plan_is_on_the_grid_and_covers_the_picture():
    s = TileSettings(tile=48, overlap=16, context=10)
    hp, wp = padded_size(203, 117, 8)
    assert (hp, wp) == (208, 120)
    windows = plan_tiles(203, 117, s, 8)
    assert len(windows) == estimate_tiles(203, 117, s, 8, force_tiles=True) > 1
    assert estimate_tiles(203, 117, s, 8) == 1  # under max_pixels: one whole pass
    for t, left, h, w in windows:
        assert t % 8 == left % 8 == h % 8 == w % 8 == 0  # stride phases as in the whole
        assert 0 <= t and t + h <= hp and 0 <= left and left + w <= wp
        assert h <= 48 + 2 * 16 and w <= 48 + 2 * 16  # tile + context rounded to the grid
    with pytest.raises(PolychromeError) as err:
        plan_tiles(64, 64, TileSettings(tile=32, overlap=32), 4)
    assert err.value.code == "bad_tiling"


@pytest.mark.parametrize("size,settings,multiple,scale", [
    ((96, 80), SMALL_TILES, 4, 1),
    ((203, 117), TileSettings(tile=48, overlap=20, context=8), 8, 2),
    ((40, 300), TileSettings(tile=32, overlap=0, context=0), 4, 1),
    ((70, 70), TileSettings(tile=36, overlap=30, context=4), 2, 3),  # overlap > step
])
def test_feather_weights_sum_to_one(size, settings, multiple, scale):
    hp, wp = padded_size(*size, multiple)
    total = torch.zeros(hp * scale, wp * scale, dtype=torch.float64)
    n = 0
    for (t, left, h, w), weight in feather_weights(*size, settings, multiple, scale):
        assert weight.shape == (h * scale, w * scale) and weight.min() >= 0
        total[t * scale:(t + h) * scale, left * scale:(left + w) * scale] += weight
        n += 1
    assert n > 1
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_picture_borders_get_full_weight():
    weights = list(feather_weights(96, 80, SMALL_TILES, 4))
    _, first = weights[0]
    (t, left, h, w), last = weights[-1]
    assert (t + h, left + w) == (96, 80)
    assert first[0, 0] == 1 and last[-1, -1] == 1  # the picture's corners
    # Along the picture's own edges a tile is feathered only toward its neighbours.
    assert first[0].max() == 1 and first[:, 0].max() == 1
    assert last[-1].max() == 1 and last[:, -1].max() == 1


# -- pictures at their own size ---------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (5, 3), (3, 5), (2, 9)])
@pytest.mark.parametrize("force", [False, True])
def test_odd_sizes_come_back_exactly(h, w, force):
    x = picture(h, w)

    def identity(t: torch.Tensor) -> torch.Tensor:  # (1, 3, h, w) -> same
        return t.clone()

    def upsample(t: torch.Tensor) -> torch.Tensor:  # (1, 3, h, w) -> (1, 3, 2h, 2w)
        return F.interpolate(t, scale_factor=2, mode="nearest")

    s = TileSettings(tile=8, overlap=4, context=4)
    out, info = run_image_model(identity, x, multiple=4, settings=s, force_tiles=force)
    assert out.shape == (1, 3, h, w)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)  # the crop is the picture itself
    hp, wp = padded_size(h, w, 4)
    assert info["padded"] == [hp, wp] and hp >= 4 and wp >= 4
    out2, _ = run_image_model(upsample, x, multiple=4, scale=2, settings=s, force_tiles=force)
    assert out2.shape == (1, 3, 2 * h, 2 * w)
    torch.testing.assert_close(out2, upsample(x), atol=1e-6, rtol=0)


def test_whole_pass_below_the_budget_and_wrong_model_output_is_an_error():
    x = picture(20, 12)
    _, info = run_image_model(lambda t: t, x, multiple=4)
    assert info == {"tiles": 1, "padded": [20, 12], "stats": "own"}
    with pytest.raises(ModelError) as err:
        run_image_model(lambda t: t[:, :, 1:], x, multiple=4)
    assert err.value.code == "bad_output"


def test_model_without_norm_layers_is_plain_tiling():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1),
                        nn.Tanh()).eval()
    x = picture(50, 37)
    whole, _ = run_image_model(net, x, multiple=1)
    tiled, info = run_image_model(net, x, multiple=1, settings=SMALL_TILES, force_tiles=True)
    assert info["tiles"] > 1 and info["stats"] == "whole"
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)  # context covers the 2 px field


def _tiled_vs_whole(fn, x, multiple, settings=SMALL_TILES):
    whole, info_w = run_image_model(fn, x, multiple=multiple)
    tiled, info_t = run_image_model(fn, x, multiple=multiple, settings=settings,
                                    force_tiles=True)
    assert info_w["tiles"] == 1 and info_t["tiles"] > 1 and tiled.shape == whole.shape
    return psnr(tiled, whole), info_t


def test_stargan_tiled_matches_whole(monkeypatch):
    model, s = tiny_stargan()
    multiple = 2 ** model.config.g_down
    x = picture(96, 80)

    def fn(t: torch.Tensor) -> torch.Tensor:  # (1, 3, h, w) -> (1, 3, h, w); one style
        return model.generator(t, s)

    db, info = _tiled_vs_whole(fn, x, multiple)
    assert info == {"tiles": 20, "padded": [96, 80], "stats": "whole"}
    assert db >= 40, db
    # The whole-picture statistics are what makes it work: per-tile ones are far off.
    monkeypatch.setattr(tiling, "apply_norm_stats", lambda stats: contextlib.nullcontext())
    own, _ = _tiled_vs_whole(fn, x, multiple)
    assert own < 30, own


def test_cyclegan_tiled_matches_whole():
    model = tiny_cyclegan()
    # Two stride-2 convs (reflection padding only at the picture's edge): multiple 4.
    multiple = 2 ** model.config.n_down
    db, _ = _tiled_vs_whole(model.generator, picture(96, 80), multiple)
    assert db >= 40, db


def test_statistics_from_a_downscaled_picture():
    model = tiny_cyclegan()
    sizes = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(t.shape[-2:]))
        return model.generator(t)

    small = TileSettings(tile=32, overlap=16, context=16, stats_max_pixels=50 * 42)
    db, info = _tiled_vs_whole(fn, picture(96, 80), 4, small)
    assert info["stats"] == "downscaled"
    stats_h, stats_w = sizes[1]  # after the whole pass: the statistics pass
    assert stats_h * stats_w <= 50 * 42 and stats_h % 4 == stats_w % 4 == 0
    # Another scale's statistics: no seams (every tile shares them) but not exact either.
    assert db >= 20, db


# -- the bundled translator ----------------------------------------------------------------
def test_bundled_emoji_stargan_loads_unchanged_and_tiles():
    model = StarGAN.from_pretrained(EMOJI).eval()  # strict: every key of the file, no more
    stock = copy.deepcopy(model.generator)
    for m in stock.modules():
        if isinstance(m, InstanceNorm2d):
            m.__class__ = nn.InstanceNorm2d  # the layer as it was before the subclass
    g = torch.Generator().manual_seed(0)
    x = picture(96, 72)
    with torch.inference_mode():
        s = model.style_from_latent(torch.randn(1, model.config.latent_dim, generator=g), 1)
        ours = model.generator(x, s)
        assert torch.equal(ours, stock(x, s)) and torch.isfinite(ours).all()
    assert list(stock.state_dict()) == list(model.generator.state_dict())
    multiple = 2 ** model.config.g_down
    db, _ = _tiled_vs_whole(lambda t: model.generator(t, s), x, multiple,
                            TileSettings(tile=32, overlap=16, context=32))
    assert db >= 40, db
