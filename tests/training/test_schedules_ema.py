"""LR schedules and the generator EMA."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from polychrome.errors import ConfigError
from polychrome.training.ema import EMA
from polychrome.training.schedules import make_schedule, schedule_from_state


def test_constant_linear_cosine_values():
    const = make_schedule("constant", 100)
    assert [const.factor(s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    lin = make_schedule("linear", 100)
    assert lin.factor(0) == 1.0 and lin.factor(50) == pytest.approx(0.5)
    assert lin.factor(100) == 0.0 and lin.factor(500) == 0.0
    cos = make_schedule("cosine", 100, min_factor=0.1)
    assert cos.factor(0) == pytest.approx(1.0)
    assert cos.factor(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cos.factor(100) == pytest.approx(0.1)
    assert cos.factor(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_then_decay():
    s = make_schedule("linear", 110, warmup_steps=10)
    assert [s.factor(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert s.factor(10) == 1.0
    assert s.factor(60) == pytest.approx(0.5)


def test_state_is_json_and_round_trips():
    s = make_schedule("cosine", 77, warmup_steps=5, min_factor=0.2)
    state = json.loads(json.dumps(s.state_dict()))
    back = schedule_from_state(state)
    assert [back.factor(i) for i in range(80)] == [s.factor(i) for i in range(80)]
    with pytest.raises(ConfigError):
        make_schedule("linear", 10).load_state_dict(state)
    with pytest.raises(ConfigError, match="unknown schedule"):
        make_schedule("step", 10)


def test_apply_sets_every_param_group():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))]}], lr=1.0)
    lr = make_schedule("linear", 10).apply(opt, 0.5, 5)
    assert lr == pytest.approx(0.25)
    assert [g["lr"] for g in opt.param_groups] == [lr, lr]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        self.discriminator = nn.Linear(2, 1)


def test_ema_blends_parameters_and_copies_buffers():
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, ("generator",), decay=0.5)
    assert ema.beta(0) == pytest.approx(0.5)  # half-life 1 step, no rampup
    before = ema.model.generator[0].weight.clone()
    with torch.no_grad():
        for p in net.generator.parameters():
            p.add_(1.0)
    net.generator.train()(torch.randn(8, 2))  # moves BN running stats
    ema.update(net, step=0)
    torch.testing.assert_close(ema.model.generator[0].weight, before + 0.5)
    assert torch.equal(ema.model.generator[1].running_mean, net.generator[1].running_mean)
    assert torch.equal(ema.model.generator[1].num_batches_tracked,
                       net.generator[1].num_batches_tracked)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert not ema.model.training


def test_ema_rampup_and_zero_decay():
    net = Net()
    ema = EMA(net, ("generator",), decay=0.999, rampup=0.05)
    assert ema.beta(0) == 0.0  # the average starts as a copy
    assert 0.0 < ema.beta(100) < ema.beta(100_000) == pytest.approx(0.999)
    assert EMA(net, ("generator",), decay=0.0).beta(1000) == 0.0


def test_ema_state_round_trip():
    net = Net()
    ema = EMA(net, ("generator",), decay=0.9)
    with torch.no_grad():
        net.generator[0].weight.fill_(3.0)
    ema.update(net, 5)
    state = ema.state_dict()
    assert all(k.startswith("generator.") for k in state)
    other = EMA(Net(), ("generator",), decay=0.9)
    other.load_state_dict(state)
    for k, v in other.state_dict().items():
        assert torch.equal(v, state[k])
