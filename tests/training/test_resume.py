"""Exact resume: N steps + resume to N+M == N+M straight, bit for bit on CPU."""

from __future__ import annotations

import pytest
import torch

from polychrome.training import train
from polychrome.training.checkpoint import load_checkpoint

from .helpers import make_packed, tiny_config

# Everything that draws random numbers is switched on: DiffAugment + ADA (global RNG),
# instance noise (noise generator), style mixing (stylegan, global RNG), lazy R1.
CASES = {
    "dcgan": dict(instance_noise=0.1, instance_noise_steps=6,
                  diffaugment="color,translation,cutout", ada=True, ada_speed_imgs=64),
    "stylegan": dict(r1_gamma=0.1, r1_interval=2, ada=True, ada_speed_imgs=64),
}


def _final_state(result):
    return load_checkpoint(result.checkpoint)


@pytest.mark.parametrize("model", sorted(CASES))
def test_resume_equals_straight_run(tmp_path, model):
    packed = make_packed()
    cfg = tiny_config(model, steps=6, checkpoint_every=3, sample_every=0, **CASES[model])
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    first = train(cfg.replace(steps=3), packed=packed, run_dir=tmp_path / "split",
                  tensorboard=False)
    assert first.step == 3 and first.checkpoint.name == "step-000003"
    resumed = train(resume=tmp_path / "split", overrides={"steps": 6}, packed=packed,
                    tensorboard=False)
    assert resumed.step == 6 and straight.step == 6

    a, sa = _final_state(straight)
    b, sb = _final_state(resumed)
    assert sorted(a) == sorted(b)
    groups = {k.split(".")[0] for k in a}
    assert {"model", "ema", "optim", "rng"} <= groups
    assert any(k.startswith("optim.d.") and k.endswith("exp_avg_sq") for k in a)
    for key in sorted(a):
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    assert sa["loader"] == sb["loader"]
    assert sa["trainer"] == sb["trainer"] and "ada" in sa["trainer"]
    assert sa["optimizers"] == sb["optimizers"]
    assert straight.final == resumed.final


def test_sampling_does_not_change_the_trajectory(tmp_path):
    packed = make_packed()
    cfg = tiny_config("stylegan", steps=3, checkpoint_every=0)
    quiet = train(cfg.replace(sample_every=0), packed=packed, run_dir=tmp_path / "a",
                  tensorboard=False)
    chatty = train(cfg.replace(sample_every=1), packed=packed, run_dir=tmp_path / "b",
                   tensorboard=False)
    assert len(list((tmp_path / "b" / "samples").glob("*.png"))) == 4  # steps 0..3
    a, _ = _final_state(quiet)
    b, _ = _final_state(chatty)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_different_seed_differs(tmp_path):
    packed = make_packed()
    cfg = tiny_config("dcgan", steps=2, checkpoint_every=0, sample_every=0)
    a, _ = _final_state(train(cfg, packed=packed, run_dir=tmp_path / "a", tensorboard=False))
    b, _ = _final_state(train(cfg.replace(seed=1), packed=packed, run_dir=tmp_path / "b",
                              tensorboard=False))
    c, _ = _final_state(train(cfg, packed=packed, run_dir=tmp_path / "c", tensorboard=False))
    assert not torch.equal(a["model.generator.net.0.weight"], b["model.generator.net.0.weight"])
    for key in a:  # same seed, fresh process state: bit-identical
        assert torch.equal(a[key], c[key]), key
