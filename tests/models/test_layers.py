"""Shared building blocks: checked against their defining formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polychrome.errors import ModelError
from polychrome.models.layers import (
    AdaIN,
    ConditionalBatchNorm2d,
    EqualLinear,
    MinibatchStdDev,
    ModulatedConv2d,
    ProjectionHead,
    ResBlock,
    embed_labels,
    make_norm2d,
    spectral_norm,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_modulated_conv_matches_per_sample_weights():
    torch.manual_seed(0)
    for demod in (True, False):
        conv = ModulatedConv2d(6, 5, 3, w_dim=4, demodulate=demod)
        x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 4)
        got = conv(x, w)
        # reference: build each sample's modulated (and demodulated) kernel explicitly
        s = conv.affine(w)
        for i in range(3):
            k = conv.weight * conv.weight_gain * s[i][None, :, None, None]
            if demod:
                k = k / k.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
            ref = F.conv2d(x[i : i + 1], k, padding=1)
            assert torch.allclose(got[i : i + 1], ref, atol=1e-5)


def test_demodulation_keeps_unit_variance():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 64, 3, w_dim=8)
    out = conv(torch.randn(8, 64, 16, 16), torch.randn(8, 8) * 3)
    assert 0.8 < out[:, :, 1:-1, 1:-1].std().item() < 1.2  # away from the zero padding


def test_equal_linear_runtime_scale_and_lr_mul():
    torch.manual_seed(0)
    lin = EqualLinear(512, 256, lr_mul=0.01, bias_init=1.0)
    # stored weights are N(0, 1/lr_mul^2); the effective weight is N(0, 1/fan_in)
    assert 90 < lin.weight.std().item() < 110
    out = lin(torch.randn(64, 512))
    assert 0.9 < (out - 1.0).std().item() < 1.1 and abs(out.mean().item() - 1.0) < 0.1


def test_conditional_batchnorm_uses_each_class_affine():
    cbn = ConditionalBatchNorm2d(4, 3)
    x = torch.randn(6, 4, 5, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(cbn(x, y), cbn.bn(x), atol=1e-6)  # starts as plain BN
    with torch.no_grad():
        cbn.embed.weight[2, :4] = 2.0  # gamma of class 2
        cbn.embed.weight[2, 4:] = 0.5  # beta of class 2
    out, base = cbn(x, y), cbn.bn(x)
    assert torch.allclose(out[y == 2], base[y == 2] * 2 + 0.5, atol=1e-5)
    assert torch.allclose(out[y != 2], base[y != 2], atol=1e-5)


def test_conditional_batchnorm_blends_gains_and_biases_for_soft_labels():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(4, 3)
    with torch.no_grad():
        cbn.embed.weight.normal_()
    cbn.eval()  # running stats: the normalised x does not depend on the batch
    x = torch.randn(2, 4, 5, 5)
    soft = torch.tensor([[0.25, 0.0, 0.75], [0.0, 1.0, 0.0]])
    table = cbn.embed.weight
    gamma, beta = (soft @ table).chunk(2, dim=1)  # the blend of the per-class affines
    ref = cbn.bn(x) * gamma[:, :, None, None] + beta[:, :, None, None]
    assert torch.allclose(cbn(x, soft), ref, atol=1e-6)
    assert torch.allclose(cbn(x, soft)[1:], cbn(x, torch.tensor([0, 1]))[1:], atol=1e-6)


@pytest.mark.parametrize("kind", ["embedding", "spectral", "equalized"])
def test_embed_labels_hard_is_the_lookup_and_soft_blends_rows(kind):
    def make() -> torch.nn.Module:
        torch.manual_seed(1)
        if kind == "equalized":
            return EqualLinear(3, 5, bias=False)
        emb = torch.nn.Embedding(3, 5)
        return spectral_norm(emb) if kind == "spectral" else emb

    a, b = make(), make()  # twins: `b` is the plain call, `a` goes through embed_labels
    a.train(), b.train()  # spectral norm updates its power-iteration state in training
    y = torch.tensor([2, 0, 1, 2])
    for _ in range(2):
        want = b(F.one_hot(y, 3).float()) if kind == "equalized" else b(y)
        assert torch.equal(embed_labels(a, y), want)  # bit for bit, state included
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
    a.eval()
    with torch.no_grad():
        rows = embed_labels(a, torch.arange(3))  # (3, 5): one row per class
        onehot = embed_labels(a, F.one_hot(y, 3).float())
        assert torch.allclose(onehot, rows[y], atol=1e-6)
        blend = embed_labels(a, torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]))
        assert torch.allclose(blend[0], (rows[0] + rows[1]) / 2, atol=1e-6)
        assert torch.allclose(blend[1], 0.1 * rows[0] + 0.2 * rows[1] + 0.7 * rows[2],
                              atol=1e-6)
        for bad in (torch.ones(2, 4), torch.ones(3)):  # wrong number of styles / not (B, K)
            with pytest.raises(ModelError):
                embed_labels(a, bad)


def test_adain_normalises_then_applies_style():
    torch.manual_seed(0)
    ada = AdaIN(4, style_dim=3)
    torch.nn.init.zeros_(ada.fc.weight)
    with torch.no_grad():
        ada.fc.bias.copy_(torch.tensor([1.0] * 4 + [0.25] * 4))  # gamma=1 -> scale 2, beta 0.25
    out = ada(torch.randn(2, 4, 8, 8) * 5 + 3, torch.randn(2, 3))
    assert torch.allclose(out.mean(dim=(2, 3)), torch.full((2, 4), 0.25), atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), torch.full((2, 4), 2.0), atol=1e-2)


def test_minibatch_stddev_appends_group_std():
    x = torch.randn(6, 4, 3, 3)
    out = MinibatchStdDev(group_size=4)(x)  # 6 % 4 != 0 -> groups of 3
    assert out.shape == (6, 5, 3, 3)
    # group of samples {0, 2, 4}: mean over features/pixels of the per-feature std
    ref = x[[0, 2, 4]].std(dim=0, unbiased=False).mean()
    assert torch.allclose(out[0, 4], ref.expand(3, 3), atol=1e-4)
    assert torch.allclose(out[4, 4], ref.expand(3, 3), atol=1e-4)


def test_projection_head_is_linear_plus_inner_product():
    torch.manual_seed(0)
    for equalized in (False, True):
        head = ProjectionHead(5, 3, equalized=equalized)
        h, y = torch.randn(4, 5), torch.tensor([0, 2, 1, 2])
        emb = head.embed(F.one_hot(y, 3).float()) if equalized else head.embed(y)
        gain = 1 / math.sqrt(5) if equalized else 1.0
        ref = head.linear(h).squeeze(1) + (emb * h).sum(1) * gain
        assert torch.allclose(head(h, y), ref, atol=1e-6)
    assert ProjectionHead(5, 1).embed is None  # unconditional: just the linear term


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    lin = spectral_norm(torch.nn.Linear(16, 8))
    with torch.no_grad():
        lin.parametrizations.weight.original.mul_(10)
        for _ in range(30):  # power iteration runs once per training-mode forward
            lin(torch.randn(2, 16))
    lin.eval()
    assert abs(torch.linalg.matrix_norm(lin.weight, ord=2).item() - 1.0) < 1e-3


@pytest.mark.parametrize("resample,norm,first,size", [
    ("up", "batch", False, 16), ("up", "cbn", False, 16), ("down", "none", True, 4),
    ("down", "instance", False, 4), ("none", "layer", False, 8), ("up", "adain", False, 16),
])
def test_resblock_shapes_and_conditioning(resample, norm, first, size):
    torch.manual_seed(0)
    block = ResBlock(3, 6, resample=resample, norm=norm, first=first, sn=norm == "none",
                     num_classes=2, style_dim=5, act="lrelu" if norm == "adain" else "relu",
                     rescale=norm == "adain")
    cond = {"cbn": torch.tensor([0, 1]), "adain": torch.randn(2, 5)}.get(norm)
    out = block(torch.randn(2, 3, 8, 8), cond)
    assert out.shape == (2, 6, size, size) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_make_norm_rejects_unknown():
    with pytest.raises(ValueError):
        make_norm2d("weird", 4)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 5, 4, 7), (1, 8, 9, 6)])
def test_upsample_conv3x3_is_conv_of_the_nearest_upsampled_picture(shape):
    import torch.nn.functional as F

    from polychrome.models.layers import upsample_conv3x3

    torch.manual_seed(0)
    x = torch.randn(*shape)
    conv = torch.nn.Conv2d(shape[1], 4, 3, 1, 1)
    want = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    got = upsample_conv3x3(x, conv.weight, conv.bias)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    got.sum().backward()  # differentiable: the training path uses it too
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_upsample_conv3x3_accepts_channels_last():
    import torch.nn.functional as F

    from polychrome.models.layers import upsample_conv3x3

    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(6, 3, 3, 1, 1).to(memory_format=torch.channels_last)
    want = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert torch.allclose(upsample_conv3x3(x, conv.weight, conv.bias), want, atol=1e-5)
