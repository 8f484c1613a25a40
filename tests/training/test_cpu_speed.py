"""What makes CPU training faster without changing what it computes: fused Adam, the EMA
written in place, one finiteness read per step, bf16 autocast only on CPUs with native bf16."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from polychrome.training import loop, train
from polychrome.training.ema import EMA
from polychrome.training.trainers.base import make_adam

from .helpers import make_packed, tiny_config

X86_OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("text, native", [(X86_OLD, False), (X86_BF16, True),
                                          (ARM_BF16, True), ("processor\t: 0\n", False)])
def test_native_bf16_is_read_from_the_cpu_flags(text, native):
    assert loop.cpu_has_native_bf16(text) is native


@pytest.mark.parametrize("native", [False, True])
def test_amp_auto_on_cpu_is_bf16_only_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    cpu = torch.device("cpu")
    assert loop.amp_dtype_for("auto", cpu) == (torch.bfloat16 if native else None)
    assert loop.amp_dtype_for("off", cpu) is None
    assert loop.amp_dtype_for("bf16", cpu) == torch.bfloat16
    assert loop.amp_dtype_for("fp16", cpu) is None  # fp16 autocast is CUDA only


def test_a_cpu_run_with_native_bf16_trains_under_bf16_autocast(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    seen = []
    real = loop._Run._setup

    def setup(self):
        real(self)
        seen.append(self.ctx.amp_dtype)

    monkeypatch.setattr(loop._Run, "_setup", setup)
    cfg = tiny_config("dcgan", steps=2, checkpoint_every=0, sample_every=0, batch_size=4)
    result = train(cfg, packed=make_packed(n=16), run_dir=tmp_path / "run", tensorboard=False)
    assert seen == [torch.bfloat16] and result.step == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result.final.values())


def _adam_run(fused: bool, steps: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(shape, generator=g)) for shape in ((7, 5), (5,), (3, 3, 2))]
    opt = make_adam(params, 1e-2, (0.5, 0.999)) if fused else \
        torch.optim.Adam(params, lr=1e-2, betas=(0.5, 0.999), foreach=False)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


def test_fused_adam_is_adam_and_deterministic():
    opt = make_adam([nn.Parameter(torch.zeros(2))], 1e-3, (0.0, 0.99))
    assert opt.param_groups[0]["fused"] is True  # CPU parameters get the fused kernel
    fused, again, plain = _adam_run(True), _adam_run(True), _adam_run(False)
    assert all(torch.equal(a, b) for a, b in zip(fused, again, strict=True))  # exact resume
    for a, b in zip(fused, plain, strict=True):  # the same update, up to float rounding
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ema_update_in_place_equals_the_blend_computed_aside():
    torch.manual_seed(0)
    net = nn.Module()
    net.generator = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = EMA(net, ("generator",), decay=0.99, rampup=0.0)
    expected = copy.deepcopy(ema.model.generator)
    for step in range(3):
        with torch.no_grad():
            for p in net.generator.parameters():
                p.add_(torch.randn_like(p))
        beta = ema.update(net, step)
        with torch.no_grad():  # the former update: lerp aside, then copy
            for p_avg, p in zip(expected.parameters(), net.generator.parameters(), strict=True):
                p_avg.copy_(p.lerp(p_avg, beta))
        for a, b in zip(ema.model.generator.parameters(), expected.parameters(), strict=True):
            assert torch.equal(a, b)  # bit for bit


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_sees_any_bad_log(bad):
    logs = {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(1.0),
            "r1": torch.tensor([0.1, 0.2])}
    assert loop.all_finite(logs) and loop.all_finite({})
    for key in logs:
        broken = dict(logs)
        broken[key] = logs[key].clone().reshape(-1)
        broken[key][-1] = bad
        assert not loop.all_finite(broken)


@pytest.mark.parametrize("model, config_allows, expected", [
    ("dcgan", True, True), ("dcgan", False, False), ("pix2pix", True, False)])
def test_channels_last_on_cpu_where_the_model_says_it_pays(tmp_path, monkeypatch, model,
                                                            config_allows, expected):
    seen = []
    real = loop._Run._setup

    def setup(self):
        real(self)
        conv = next(m for m in self.model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))
        seen.append((self.ctx.channels_last,
                     conv.weight.is_contiguous(memory_format=torch.channels_last)
                     and not conv.weight.is_contiguous()))

    monkeypatch.setattr(loop._Run, "_setup", setup)
    extra = {"model_config": {"width": 8, "max_width": 16, "n_down": 1, "n_blocks": 1,
                              "d_width": 8}, "resolution": 32} if model == "pix2pix" else {}
    cfg = tiny_config(model, steps=1, checkpoint_every=0, sample_every=0, batch_size=4,
                      channels_last=config_allows, **extra)
    packed = make_packed(n=16, resolution=cfg.resolution)
    result = train(cfg, packed=packed, run_dir=tmp_path / "run", tensorboard=False)
    assert seen == [(expected, expected)] and result.step == 1
    assert loop.uses_channels_last(nn.Module(), torch.device("cuda"))  # CUDA: always
