"""The noise -> image zoo: one contract test over every registered noise model, plus stylegan."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from polychrome.errors import ModelError
from polychrome.models import GANModel, create_model, list_models
from polychrome.models.zoo.common import TRAIN_DEFAULT_KEYS

R = 16
# Tiny per-model overrides; a model added later without an entry runs at its defaults.
TINY: dict[str, dict] = {
    "mlp-gan": {"z_dim": 8, "width": 16, "num_layers": 2, "label_dim": 4},
    "dcgan": {"z_dim": 8, "width": 8, "max_channels": 32, "label_dim": 4},
    "wgan-gp": {"z_dim": 8, "width": 8, "max_channels": 32, "label_dim": 4},
    "sngan": {"z_dim": 8, "width": 8, "max_channels": 16, "label_dim": 4},
    "cgan": {"z_dim": 8, "width": 8, "max_channels": 16},
    "stylegan": {"z_dim": 8, "w_dim": 8, "width": 8, "max_channels": 16, "mapping_layers": 2},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, num_domains: int = 1, **kw):
    return create_model(name, **{"resolution": R, "num_domains": num_domains,
                                 **TINY.get(name, {}), **kw})


def test_registry_names_are_the_contract():
    assert {"mlp-gan", "dcgan", "wgan-gp", "sngan", "cgan", "stylegan"} <= set(
        list_models(family="noise"))


@pytest.mark.parametrize("num_domains", [1, 3])
@pytest.mark.parametrize("name", list_models(family="noise"))
def test_noise_model_contract(name, num_domains, tmp_path):
    torch.manual_seed(0)
    model = tiny(name, num_domains)
    cfg, b = model.config, 4
    assert model.family == "noise" and model.inference_modules == ("generator",)
    assert TRAIN_DEFAULT_KEYS <= set(model.train_defaults)
    assert model.train_defaults["loss"] in ("ns", "hinge", "wgan", "lsgan")
    json.dumps(model.train_defaults)  # goes into the run config as-is

    # latents and labels come from the given torch.Generator
    z = model.sample_z(b, generator=torch.Generator().manual_seed(1))
    assert z.shape == (b, cfg.z_dim)
    assert torch.equal(z, model.sample_z(b, generator=torch.Generator().manual_seed(1)))
    y = model.sample_y(b, generator=torch.Generator().manual_seed(2))
    assert (y is None) == (num_domains == 1)

    # training-mode forward: shapes, range, finite; this also moves BN stats, SN vectors, w_avg
    model.train()
    x = model.generator(z, y)
    assert x.shape == (b, cfg.channels, R, R)
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    out = model.discriminator(x, y)
    assert out.shape == (b,) and torch.isfinite(out).all()

    # backward through D(G(z)) reaches every parameter with a finite gradient
    model.zero_grad(set_to_none=True)
    out.mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"

    # user mistakes are ModelErrors, not tracebacks
    with pytest.raises(ModelError):
        model.generator(torch.randn(b, cfg.z_dim + 1), y)
    with pytest.raises(ModelError):
        model.generator(z, torch.full((b,), num_domains))
    if num_domains > 1:
        with pytest.raises(ModelError):
            model.generator(z, None)
        x_eval = x.detach()
        model.eval()
        with torch.inference_mode():  # the label reaches D
            assert not torch.equal(model.discriminator(x_eval, 0), model.discriminator(x_eval, 1))

    # save -> load gives the same generator and discriminator outputs (eval mode)
    model.eval()
    loaded = GANModel.from_pretrained(model.save_pretrained(tmp_path / "full"))
    assert type(loaded) is type(model) and loaded.config == cfg
    loaded.eval()
    g_only = GANModel.from_pretrained(
        model.save_pretrained(tmp_path / "g", modules=model.inference_modules))
    g_only.eval()
    assert g_only.loaded_modules == ("generator",)
    kw = {"truncation": 0.7, "noise_mode": "const"}  # every generator accepts these
    with torch.inference_mode():
        ref = model.generator(z, y, **kw)
        assert torch.equal(ref, loaded.generator(z, y, **kw))
        assert torch.equal(ref, g_only.generator(z, y, **kw))
        assert torch.equal(model.discriminator(ref, y), loaded.discriminator(ref, y))


def _conditional(name: str):
    """A 3-style model as after a little training: moved BN stats / w_avg, and label
    tables away from their init (cgan's conditional BN starts identical for every style)."""
    torch.manual_seed(0)
    model = tiny(name, 3)
    with torch.no_grad():
        for m in model.generator.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.add_(0.5 * torch.randn_like(m.weight))
        model.train()
        for _ in range(2):
            model.generator(model.sample_z(8), model.sample_y(8))
    return model.eval()


@pytest.mark.parametrize("name", list_models(family="noise"))
def test_conditional_generators_take_soft_labels(name):
    model = _conditional(name)
    g, k = model.generator, model.config.num_domains
    z = model.sample_z(4, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 1])
    kw = {"truncation": 0.7, "noise_mode": "const"}  # truncation pulls toward the style's mean
    with torch.inference_mode():
        hard = g(z, y, **kw)
        assert torch.equal(hard, g(z, y, **kw))  # int labels: deterministic, bit for bit
        onehot = g(z, F.one_hot(y, k).float(), **kw)
        assert onehot.shape == hard.shape and torch.allclose(onehot, hard, atol=1e-5)
        # a (1, K) soft label applies to the whole batch
        ends = [g(z, torch.full((4,), i), **kw) for i in (0, 1)]
        half = g(z, torch.tensor([[0.5, 0.5, 0.0]]), **kw)
        assert half.shape == (4, model.config.channels, R, R)
        assert torch.isfinite(half).all() and half.min() >= -1 and half.max() <= 1
        for end in ends:
            assert (half - end).abs().amax() > 1e-3  # a 50/50 blend is neither end
        # ... and lies between them: closer to each end than the ends are to each other
        gap = (ends[0] - ends[1]).abs().mean()
        assert all((half - end).abs().mean() < gap for end in ends)
        for bad in (torch.ones(4, k + 1), torch.ones(3, k), torch.ones(k),
                    torch.full((4, k), float("nan"))):
            with pytest.raises(ModelError) as e:
                g(z, bad, **kw)
            assert e.value.code == "bad_label"
        with pytest.raises(ModelError):  # discriminators keep int labels
            model.discriminator(hard, F.one_hot(y, k).float())
    # soft labels train too: a gradient reaches the label weights
    model.train()
    soft = torch.full((4, k), 1.0 / k, requires_grad=True)
    g(z, soft, noise_mode="const").square().mean().backward()
    assert soft.grad is not None and torch.isfinite(soft.grad).all() and soft.grad.abs().sum() > 0


def test_from_pretrained_rejects_bad_directories(tmp_path):
    model = tiny("dcgan")
    good = model.save_pretrained(tmp_path / "good")

    def variant(name: str, edit) -> str:
        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d)
        return d

    def set_config(d, **kw):
        spec = json.loads((d / "config.json").read_text())
        for k, v in kw.items():
            if k == "model":
                spec["model"] = v
            else:
                spec["config"][k] = v
        (d / "config.json").write_text(json.dumps(spec))

    cases = {
        "wrong_weights": (variant("w", lambda d: set_config(d, width=16)), "bad_weights"),
        "unknown_arch": (variant("a", lambda d: set_config(d, model="nope-gan")), "unknown_model"),
        "corrupt_weights": (variant("c", lambda d: (d / "model.safetensors").write_bytes(b"xx")),
                            "bad_weights"),
        "garbage_config": (variant("j", lambda d: (d / "config.json").write_text("{")),
                           "not_a_model"),
        "bad_config_type": (variant("t", lambda d: set_config(d, width="8")), "bad_config"),
        "not_a_model_dir": (tmp_path, "not_a_model"),
    }
    for case, (d, code) in cases.items():
        with pytest.raises(ModelError) as err:
            GANModel.from_pretrained(d)
        assert err.value.code == code, case
        assert "\n" not in str(err.value), case  # one-line message for the CLI

    # asking for a specific class checks the architecture
    sngan_cls = type(tiny("sngan"))
    with pytest.raises(ModelError) as err:
        sngan_cls.from_pretrained(good)
    assert err.value.code == "wrong_model"


def _trained_stylegan(num_domains: int):
    """A tiny stylegan whose w_avg has moved away from zero, as after training."""
    torch.manual_seed(0)
    model = tiny("stylegan", num_domains, w_avg_beta=0.5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.generator(model.sample_z(8), model.sample_y(8))
    model.eval()
    return model


def test_stylegan_truncation_tracks_mean_w_per_style():
    model = _trained_stylegan(3)
    g = model.generator
    w_avg = g.mapping.w_avg.clone()
    assert w_avg.shape == (3, model.config.w_dim) and w_avg.abs().sum(dim=1).min() > 0
    z1, z2 = model.sample_z(2), model.sample_z(2)
    same = torch.tensor([1, 1])
    with torch.inference_mode():
        a = g(z1, same, truncation=0.0, noise_mode="const")
        b = g(z2, same, truncation=0.0, noise_mode="const")
        assert torch.equal(a, b) and torch.equal(a[0], a[1])  # psi=0: the style's mean image
        other = g(z1, torch.tensor([2, 2]), truncation=0.0, noise_mode="const")
        assert not torch.allclose(a, other)  # ... and each style has its own mean
        assert not torch.allclose(g(z1, same, noise_mode="const"), g(z2, same, noise_mode="const"))
        # mapping/truncate are public for the style pipeline
        w = g.mapping(z1, same)
        assert w.shape == (2, model.config.w_dim)
        assert torch.allclose(g.truncate(w, same, 0.0), w_avg[1].expand(2, -1))
    assert torch.equal(g.mapping.w_avg, w_avg)  # eval mode never updates the average


def test_stylegan_w_avg_updates_only_seen_styles():
    model = tiny("stylegan", 3)
    m = model.generator.mapping
    m.train()
    before = m.w_avg.clone()
    with torch.no_grad():
        m(model.sample_z(4), torch.tensor([0, 0, 2, 2]))
    assert not torch.equal(m.w_avg[0], before[0]) and not torch.equal(m.w_avg[2], before[2])
    assert torch.equal(m.w_avg[1], before[1])


def test_stylegan_style_mixing_and_noise_modes():
    torch.manual_seed(0)
    model = tiny("stylegan", 1)
    g = model.generator
    g.train()
    z = model.sample_z(4, generator=torch.Generator().manual_seed(3))

    def run(prob: float, seed: int = 7) -> torch.Tensor:
        torch.manual_seed(seed)
        return g(z, mixing_prob=prob, noise_mode="const")

    mixed = run(1.0)
    assert torch.equal(mixed, run(1.0))  # reproducible from the global RNG state alone
    assert not torch.allclose(mixed, run(0.0))  # the second latent was used
    mixed.square().mean().backward()
    assert all(p.grad is not None for p in g.parameters())
    g.eval()
    with torch.inference_mode():  # no mixing outside training
        assert torch.equal(run(1.0), run(0.0))
        # per-layer ws for the style pipeline; noise modes
        ws = g.mapping(model.sample_z(4)).unsqueeze(1).repeat(1, g.num_ws, 1)
        ws[:, g.num_ws // 2:] = g.mapping(model.sample_z(4)).unsqueeze(1)
        assert g.synthesis(ws, noise_mode="none").shape == (4, 3, R, R)
        assert torch.equal(g.synthesis(ws, noise_mode="const"), g.synthesis(ws, noise_mode="const"))
        for bad in (lambda: g.synthesis(ws[:, 1:]), lambda: g(z, noise_mode="loud")):
            with pytest.raises(ModelError):
                bad()
    assert g.num_ws == model.config.num_ws == 2 * 4 - 2  # 16 px: 4, 8, 16


@pytest.mark.parametrize("resolution", [8, 64, 128])
def test_depth_follows_resolution(resolution):
    for name in list_models(family="noise"):
        model = tiny(name, 2, resolution=resolution)
        model.eval()
        with torch.inference_mode():
            x = model.generator(model.sample_z(2), torch.tensor([0, 1]))
            assert x.shape == (2, 3, resolution, resolution)
            assert model.discriminator(x, torch.tensor([0, 1])).shape == (2,)


def test_bad_configs_are_model_errors():
    for name, kw in [("dcgan", {"resolution": 24}), ("wgan-gp", {"critic_norm": "batch"}),
                     ("stylegan", {"width": "8"}), ("mlp-gan", {"dropout": 1.0}),
                     ("sngan", {"no_such_key": 1}), ("cgan", {"z_dim": 0})]:
        with pytest.raises(ModelError):
            create_model(name, **kw)
