"""Every image -> image (translation) model: shapes, ranges, gradients, save -> load.

Parametrised over `list_models(family="translation")`, so a new translator must add
its tiny config and a `_run_all` branch here (the test fails loudly until it does).
"""

from __future__ import annotations

import pytest
import torch

from polychrome.errors import ModelError
from polychrome.models import GANModel, create_model, list_models
from polychrome.models.zoo.cyclegan import CycleGAN, CycleGANConfig
from polychrome.models.zoo.stargan import StarGAN, StarGANConfig

B, R = 6, 16

TINY: dict[str, dict] = {
    "stargan": dict(resolution=R, num_domains=3, width=8, max_width=16, style_dim=8,
                    latent_dim=4, mapping_dim=16, mapping_shared_layers=2,
                    mapping_head_layers=2, e_width=8, e_max_width=16, d_width=8,
                    d_max_width=16),
    "cyclegan": dict(resolution=R, num_domains=2, width=8, n_blocks=2, d_width=8),
}


def _tiny(name: str, **overrides) -> GANModel:
    assert name in TINY, f"add a tiny config for translation model {name!r} to this test"
    torch.manual_seed(0)
    return create_model(name, **{**TINY[name], **overrides})


def _inputs(model: GANModel) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, model.config.channels, R, R, generator=g) * 2 - 1  # (B, C, R, R) in [-1, 1]
    y = torch.arange(B) % model.config.num_domains  # every domain present
    return x, y


def _run_all(model: GANModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run every network once; returns named outputs (images first)."""
    if isinstance(model, StarGAN):
        z = model.sample_z(x.shape[0], generator=torch.Generator().manual_seed(2))
        s_lat = model.mapping(z, y)
        s_ref = model.style_encoder(x, y)
        fake = model.generator(x, s_lat)
        return {"img:latent": fake, "img:ref": model.generator(x, s_ref),
                "style:latent": s_lat, "style:ref": s_ref,
                "logit:d": model.discriminator(fake, y)}
    if isinstance(model, CycleGAN):
        fake_b, fake_a = model.generator(x), model.generator_ba(x)
        return {"img:ab": fake_b, "img:ba": fake_a,
                "patch:d_b": model.discriminator(fake_b),
                "patch:d_a": model.discriminator_a(fake_a),
                "logit:d_b": model.discriminator.score(fake_b)}
    raise AssertionError(f"no _run_all branch for {type(model).__name__}")


def _inference(model: GANModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a pipeline computes from the exported (inference) modules only."""
    with torch.inference_mode():
        out = {f"to{t}": model.translate(x, t, generator=torch.Generator().manual_seed(3))
               if isinstance(model, StarGAN) else model.translate(x, t)
               for t in range(model.config.num_domains)}
        if isinstance(model, StarGAN):
            out["ref"] = model.translate(x, y, ref=x.flip(0))
    return out


TRANSLATION = list_models(family="translation")


def test_translation_family_registered():
    assert {"stargan", "cyclegan"} <= set(TRANSLATION)


@pytest.mark.parametrize("name", TRANSLATION)
def test_shapes_ranges_finite(name):
    model = _tiny(name)
    x, y = _inputs(model)
    outs = _run_all(model, x, y)
    for key, t in outs.items():
        assert torch.isfinite(t).all(), key
        if key.startswith("img"):
            assert t.shape == x.shape, key  # (B, C, R, R)
            assert t.min() >= -1 and t.max() <= 1, key
        elif key.startswith("logit"):
            assert t.shape == (B,), key
        elif key.startswith("patch"):
            assert t.shape[:2] == (B, 1) and min(t.shape[2:]) >= 2, key
    for t, img in _inference(model, x, y).items():
        assert img.shape == x.shape and img.abs().max() <= 1, t


@pytest.mark.parametrize("name", TRANSLATION)
def test_backward_reaches_every_parameter(name):
    model = _tiny(name)
    x, y = _inputs(model)
    outs = _run_all(model, x, y)
    # A fixed random projection per output so no gradient cancels by symmetry.
    g = torch.Generator().manual_seed(4)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in outs.values())
    loss.backward()
    for net_name, net in model.named_children():
        total = 0.0
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{net_name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{net_name}.{pname}"
            total += float(p.grad.abs().sum())
        assert total > 0, f"{net_name}: all gradients are zero"


@pytest.mark.parametrize("name", TRANSLATION)
def test_save_load_same_outputs(name, tmp_path):
    model = _tiny(name).eval()
    x, y = _inputs(model)
    before = _inference(model, x, y)
    d = model.save_pretrained(tmp_path / "m", modules=model.inference_modules,
                              meta={"styles": [f"s{i}" for i in range(model.config.num_domains)]})
    loaded = GANModel.from_pretrained(d).eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.loaded_modules == model.inference_modules
    assert loaded.style_names == [f"s{i}" for i in range(model.config.num_domains)]
    after = _inference(loaded, x, y)
    for key in before:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("name", TRANSLATION)
def test_full_save_restores_discriminators(name, tmp_path):
    model = _tiny(name)
    loaded = type(model).from_pretrained(model.save_pretrained(tmp_path / "all"))
    for net_name, net in model.named_children():
        ref = net.state_dict()
        got = getattr(loaded, net_name).state_dict()
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref), net_name


@pytest.mark.parametrize("name", TRANSLATION)
def test_bad_config_and_style_rejected(name):
    with pytest.raises(ModelError):
        create_model(name, **TINY[name], no_such_key=1)
    model = _tiny(name)
    x, _ = _inputs(model)
    with pytest.raises(ModelError):
        model.translate(x, model.config.num_domains)  # one past the last style
    if name == "stargan":  # more skips than downsamplings
        with pytest.raises(ModelError, match="skips"):
            _tiny(name, skips=model.config.g_down + 1)


# -- stargan ----------------------------------------------------------------------------
@pytest.mark.parametrize("skips", [0, 1, 2])
def test_stargan_encode_decode_split_equals_forward(skips):
    model = _tiny("stargan", skips=skips).eval()
    x, y = _inputs(model)
    s = model.style_from_latent(model.sample_z(B), y)
    with torch.no_grad():
        content = model.generator.encode(x)
        cfg = model.config
        side = R >> cfg.g_down
        assert content.features.shape == (B, model.generator.content_channels, side, side)
        # skips: the encoder's features at the `skips` coarsest levels, coarsest first
        assert [t.shape[-1] for t in content.skips] == [side * 2 ** (k + 1) for k in range(skips)]
        assert torch.equal(model.generator.decode(content, s), model.generator(x, s))
        # Style switching on a cached content: each new style needs decode only.
        s2 = model.style_from_latent(model.sample_z(B), y)
        assert torch.equal(model.generator.decode(content, s2), model.generator(x, s2))


def test_stargan_rgb_skip_starts_as_identity_and_learns_a_residual():
    model = _tiny("stargan", rgb_skip=True).eval()
    x, y = _inputs(model)
    s = model.style_from_latent(model.sample_z(B), y)
    with torch.no_grad():
        out = model.generator(x, s)
        assert (out - x).abs().max() < 0.01  # identity at initialisation (up to the clamp)
        content = model.generator.encode(x)
        assert torch.equal(content.source, x)
        assert torch.equal(model.generator.decode(content, s), out)
        torch.nn.init.normal_(model.generator.to_rgb[-1].weight)  # a trained residual
        s2 = model.style_from_latent(model.sample_z(B), y)
        a, b = model.generator(x, s), model.generator(x, s2)
    assert torch.isfinite(a).all() and (a - b).abs().mean() > 1e-3


def test_stargan_style_changes_output_and_content_matters():
    model = _tiny("stargan").eval()
    x, y = _inputs(model)
    g = torch.Generator().manual_seed(5)
    s1, s2 = torch.randn(2, B, model.config.style_dim, generator=g)
    with torch.no_grad():
        a, b = model.generator(x, s1), model.generator(x, s2)
        c = model.generator(x.flip(-1), s1)
    assert (a - b).abs().mean() > 1e-3  # the style code drives the output
    assert (a - c).abs().mean() > 1e-3  # and so does the content image


def test_stargan_mapping_head_selection():
    model = _tiny("stargan").eval()
    z = model.sample_z(B, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        s = model.mapping(z, y)
        every = model.mapping.forward_all(z)  # (B, K, style_dim)
        assert every.shape == (B, 3, model.config.style_dim)
        assert torch.equal(s, every[torch.arange(B), y])
        assert not torch.allclose(every[:, 0], every[:, 1])  # heads differ
        # Changing head 2 changes exactly the samples asked for domain 2.
        for p in model.mapping.heads[2].parameters():
            p.add_(0.5)
        s_new = model.mapping(z, y)
    changed = (s_new - s).abs().amax(dim=1) > 0
    assert changed.tolist() == [v == 2 for v in y.tolist()]


def test_stargan_style_encoder_and_discriminator_heads():
    model = _tiny("stargan").eval()
    x, _ = _inputs(model)
    with torch.no_grad():
        every = model.style_encoder.forward_all(x)  # (B, K, style_dim)
        logits = model.discriminator.heads(model.discriminator.trunk(x))  # (B, K)
        for k in range(3):
            yk = torch.full((B,), k)
            assert torch.equal(model.style_encoder(x, yk), every[:, k])
            assert torch.equal(model.discriminator(x, yk), logits[:, k])
    assert not torch.allclose(logits[:, 0], logits[:, 1])


def test_stargan_translate_sources_and_seeding():
    model = _tiny("stargan").eval()
    x, y = _inputs(model)
    with torch.no_grad():
        a = model.translate(x, 1, generator=torch.Generator().manual_seed(7))
        b = model.translate(x, 1, generator=torch.Generator().manual_seed(7))
        c = model.translate(x, 1, generator=torch.Generator().manual_seed(8))
        ref = model.translate(x, y, ref=x)
        assert torch.equal(ref, model.generator(x, model.style_encoder(x, y)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ModelError):
        model.translate(x, torch.tensor([0, 1]))  # wrong number of labels


def test_stargan_default_config_is_cpu_sized():
    model = create_model("stargan")
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n <= 3e6, n
    assert model.config.resolution == 32


def test_stargan_paper_preset_builds():
    cfg = StarGANConfig.paper(resolution=64, num_domains=3)
    assert (cfg.style_dim, cfg.latent_dim, cfg.max_width, cfg.mapping_dim) == (64, 16, 512, 512)
    assert cfg.width == 256  # 64 channels at 256 px, same channels per feature-map size
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = StarGAN(cfg)
        out = model.generator(torch.empty(1, 3, 64, 64), torch.empty(1, 64))
        logit = model.discriminator(torch.empty(2, 3, 64, 64), torch.zeros(2, dtype=torch.long))
    assert out.shape == (1, 3, 64, 64) and logit.shape == (2,)
    assert model.generator.content_channels == 512 and model.generator.content_size == 16
    counts = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}
    assert 25e6 < counts["generator"] < 40e6, counts
    assert 50e6 < sum(counts.values()) < 100e6, counts
    big = StarGANConfig.paper(resolution=256)
    assert big.width == 64 and big.g_down == 4  # the paper's 256 px network
    with pytest.raises(ModelError):
        StarGANConfig.paper(resolution=64, no_such_key=1)


# -- cyclegan ---------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_cyclegan_requires_two_domains(k):
    with pytest.raises(ModelError, match="exactly 2"):
        create_model("cyclegan", resolution=R, num_domains=k)


def test_cyclegan_translate_picks_direction():
    model = _tiny("cyclegan").eval()
    x, _ = _inputs(model)
    with torch.no_grad():
        assert torch.equal(model.translate(x, 1), model.generator(x))
        assert torch.equal(model.translate(x, 0), model.generator_ba(x))
        assert torch.equal(model.translate(x, torch.ones(B, dtype=torch.long)),
                           model.generator(x))
        assert not torch.equal(model.generator(x), model.generator_ba(x))
    assert model.discriminator_for(1) is model.discriminator
    assert model.discriminator_for(0) is model.discriminator_a
    with pytest.raises(ModelError):
        model.translate(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ModelError):
        model.translate(x, 2)


@pytest.mark.parametrize("res,side", [(16, 2), (32, 2), (64, 6), (256, 30)])
def test_cyclegan_patch_map_size(res, side):
    # 256 px with three stride-2 layers is the paper's 70x70 PatchGAN: a 30x30 map.
    cfg = CycleGANConfig(resolution=res, width=64, d_width=64, n_blocks=9)
    cfg.validate()
    with torch.device("meta"):
        model = CycleGAN(cfg)
        patches = model.discriminator(torch.empty(1, 3, res, res))
        img = model.generator(torch.empty(1, 3, res, res))
    assert patches.shape == (1, 1, side, side)
    assert img.shape == (1, 3, res, res)
    # Receptive field of the PatchGAN (4x4 kernels): 70 px with 3 stride-2 layers.
    rf, jump = 1, 1
    for m in model.discriminator.net:
        if isinstance(m, torch.nn.Conv2d):
            rf += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    assert cfg.patch_layers == (3 if res >= 32 else 2)
    if cfg.patch_layers == 3:
        assert rf == 70
