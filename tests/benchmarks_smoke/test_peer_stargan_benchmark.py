"""benchmarks/peer_stargan.py end to end against a fake "official" StarGAN v2 checkout.

The fake peer is written here: core/model.py, core/solver.py, core/data_loader.py and
core/utils.py with the official code's function names and signatures around tiny nets
(an R1 term through autograd.grad included, so the FLOP counting path is exercised). It
runs on this test's own Python. Figures from it mean nothing: only the script's mechanics
(both sides run, interleaved rounds, FLOPs counted, translations scored by the same
evaluator, the JSON record) are checked.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from polychrome.data.synthetic import make_shapes_dataset

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import peer_stargan  # noqa: E402

FAKE_MODEL = '''
import copy
import torch
from torch import nn


class Nets(dict):  # attribute access, like the Munch the real build_model returns
    __getattr__ = dict.__getitem__


class Generator(nn.Module):
    def __init__(self, style_dim):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.style = nn.Linear(style_dim, 3)

    def forward(self, x, s, masks=None):
        return torch.tanh(self.conv(x) + self.style(s)[:, :, None, None])


class PerDomain(nn.Module):
    def __init__(self, d_in, d_out, k):
        super().__init__()
        self.fc, self.k, self.d_out = nn.Linear(d_in, d_out * k), k, d_out

    def forward(self, h, y):
        out = self.fc(h).view(h.shape[0], self.k, self.d_out)
        return out[torch.arange(h.shape[0]), y]


class MappingNetwork(nn.Module):
    def __init__(self, latent_dim, style_dim, k):
        super().__init__()
        self.head = PerDomain(latent_dim, style_dim, k)

    def forward(self, z, y):
        return self.head(z, y)


class ImageNet(nn.Module):  # style encoder (d_out = style_dim) and discriminator (d_out = 1)
    def __init__(self, d_out, k):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = PerDomain(4, d_out, k)

    def forward(self, x, y):
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(h, y).squeeze(-1)


def build_model(args):
    nets = Nets(generator=Generator(args.style_dim),
                mapping_network=MappingNetwork(args.latent_dim, args.style_dim, args.num_domains),
                style_encoder=ImageNet(args.style_dim, args.num_domains),
                discriminator=ImageNet(1, args.num_domains))
    ema = Nets({k: copy.deepcopy(v) for k, v in nets.items() if k != "discriminator"})
    return nets, ema
'''

FAKE_SOLVER = '''
import torch
import torch.nn.functional as F


def compute_d_loss(nets, args, x_real, y_org, y_trg, z_trg=None, x_ref=None, masks=None):
    x_real.requires_grad_()
    out = nets.discriminator(x_real, y_org)
    grad = torch.autograd.grad(out.sum(), x_real, create_graph=True)[0]
    reg = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
    with torch.no_grad():
        s = nets.mapping_network(z_trg, y_trg) if z_trg is not None else \\
            nets.style_encoder(x_ref, y_trg)
        fake = nets.generator(x_real, s)
    fake_out = nets.discriminator(fake, y_trg)
    loss = F.softplus(-out).mean() + F.softplus(fake_out).mean() + args.lambda_reg * reg
    return loss, {"reg": reg.item()}


def compute_g_loss(nets, args, x_real, y_org, y_trg, z_trgs=None, x_refs=None, masks=None):
    s = nets.mapping_network(z_trgs[0], y_trg) if z_trgs is not None else \\
        nets.style_encoder(x_refs[0], y_trg)
    fake = nets.generator(x_real, s)
    loss = F.softplus(-nets.discriminator(fake, y_trg)).mean()
    loss = loss + args.lambda_cyc * (nets.generator(fake, s) - x_real).abs().mean()
    return loss, {"adv": loss.item()}


def moving_average(model, model_test, beta=0.999):
    for p, p_test in zip(model.parameters(), model_test.parameters()):
        p_test.data = torch.lerp(p.data, p_test.data, beta)
'''

FAKE_LOADER = '''
import os
import types

import numpy as np
import torch
from PIL import Image


def _images(root):
    xs, ys = [], []
    for k, style in enumerate(sorted(os.listdir(root))):
        for f in sorted(os.listdir(os.path.join(root, style))):
            arr = np.array(Image.open(os.path.join(root, style, f)).convert("RGB"))
            xs.append(torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1))
            ys.append(k)
    return torch.stack(xs), torch.tensor(ys)


def get_train_loader(root, which="source", img_size=256, batch_size=8, prob=0.5,
                     num_workers=4):
    x, y = _images(root)
    return types.SimpleNamespace(x=x, y=y, batch_size=batch_size, which=which)


class InputFetcher:
    def __init__(self, loader, loader_ref=None, latent_dim=16, mode=""):
        self.loader, self.loader_ref, self.latent_dim = loader, loader_ref, latent_dim

    def __next__(self):
        b = self.loader.batch_size
        i = torch.randint(len(self.loader.y), (b,))
        j = torch.randint(len(self.loader_ref.y), (b,))
        return types.SimpleNamespace(
            x_src=self.loader.x[i], y_src=self.loader.y[i], x_ref=self.loader_ref.x[j],
            x_ref2=self.loader_ref.x[j.flip(0)], y_ref=self.loader_ref.y[j],
            z_trg=torch.randn(b, self.latent_dim), z_trg2=torch.randn(b, self.latent_dim))
'''

FAKE_UTILS = '''
from torch import nn


def he_init(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
'''

TINY = {"width": 8, "max_width": 16, "style_dim": 8, "mapping_dim": 16, "e_width": 8,
        "e_max_width": 16, "d_width": 8, "d_max_width": 16}


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("peer")
    (root / "core").mkdir()
    (root / "core" / "__init__.py").write_text("")
    for name, text in (("model", FAKE_MODEL), ("solver", FAKE_SOLVER),
                       ("data_loader", FAKE_LOADER), ("utils", FAKE_UTILS)):
        (root / "core" / f"{name}.py").write_text(text)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three style folders drawing the same shapes under the same names, plus a stray file."""
    out = make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "shapes", n=80, size=16,
                              styles=("flat", "outline", "shadow"))
    (out / "metadata.csv").write_text("not a style\n")
    return out


def _args(peer: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--peer-dir", str(peer), "--peer-python", sys.executable, "--data", str(data),
            "--iters", "2", "--styles", "3", "--resolution", "16", "--batch", "4",
            "--threads", "1", "--polychrome-model-config", json.dumps(TINY), "--json",
            "--out", str(out), *extra]


def _finite(*values: float) -> bool:
    return all(isinstance(v, float | int) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow
def test_both_sides_timed_counted_and_scored(peer, data, tmp_path, capsys):
    out = tmp_path / "peer.json"
    assert peer_stargan.main(_args(peer, data, out, "--rounds", "2",
                                   "--quality-cpu-minutes", "0.03",
                                   "--evaluator-steps", "150")) == 0
    rec = json.loads(out.read_text())
    assert rec["command"].startswith("python benchmarks/peer_stargan.py --peer-dir PEER_DIR")
    assert str(tmp_path) not in json.dumps(rec)  # no machine paths in the record
    assert rec["settings"]["styles"] == ["flat", "outline", "shadow"]
    assert rec["polychrome_choices"] == peer_stargan.POLYCHROME_CHOICES
    assert rec["polychrome_recipe"]["trainer_options"]["lambda_id"] == 0
    # The paper's losses and hyper-parameters; only the schedule differs (lazy R1, both
    # branches in one D and one G update).
    assert rec["recipe_differences"] == [
        "R1 every n-th D update (scaled by n): polychrome 16 vs official 1",
        "updates per iteration: polychrome 2 (batched branches) vs official 4"]
    for side in ("polychrome", "official"):
        s = rec["sides"][side]
        assert s["iterations_timed"] == 4 and len(s["rounds"]) == 2
        assert _finite(s["wall_s_per_iter"], s["cpu_s_per_iter"], s["img_per_s"],
                       s["img_per_cpu_s"], s["gflop_per_iter"], s["gflop_per_s"])
        assert s["img_per_s"] == pytest.approx(4 / s["wall_s_per_iter"])
        assert set(s["params_M"]) and s["threads"] == 1
    assert rec["ratio_img_per_s"] == pytest.approx(rec["sides"]["polychrome"]["img_per_s"]
                                                   / rec["sides"]["official"]["img_per_s"])
    assert rec["ratio_img_per_cpu_s"] == pytest.approx(
        rec["sides"]["polychrome"]["img_per_cpu_s"] / rec["sides"]["official"]["img_per_cpu_s"])
    assert len(rec["ratio_img_per_s_per_round"]) == 2
    assert _finite(*rec["ratio_img_per_s_per_round"])
    # the FLOP counts are the nets' own: the fake official nets are far smaller
    assert rec["sides"]["official"]["gflop_per_iter"] < rec["sides"]["polychrome"]["gflop_per_iter"]

    q = rec["quality"]
    assert "refused" not in q, q.get("refused")
    for side in ("polychrome", "official"):
        assert q["runs"][side]["iterations"] >= 1 and q["runs"][side]["cpu_s"] >= 0.03 * 60
        m = q[side]
        assert m["n_pairs"] == q["translations"] > 0  # every job scored, none missing
        assert 0 <= m["style_accuracy"] <= 1 and _finite(m["paired_l1"], m["paired_feat"])
    text = capsys.readouterr().out
    assert "ratio_img_per_s" in text and "| official |" in text and "early training" in text


def test_user_mistakes_are_one_line_errors(peer, data, tmp_path, capsys):
    out = tmp_path / "x.json"
    assert peer_stargan.main(_args(tmp_path, data, out)) == 2
    assert "has no core/model.py" in capsys.readouterr().err
    assert peer_stargan.main(_args(peer, data, out, "--styles", "5")) == 2
    assert "at least 5 sub-folders" in capsys.readouterr().err
    assert peer_stargan.main(_args(peer, data, out, "--resolution", "24")) == 2
    assert not out.exists()
