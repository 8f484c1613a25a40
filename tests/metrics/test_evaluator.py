"""The offline evaluator: deterministic training, caching beside the dataset, classification."""

from __future__ import annotations

from pathlib import Path

import torch

from polychrome.data.cache import load_packed
from polychrome.metrics.api import make_training_evaluator
from polychrome.metrics.evaluator import (
    OfflineEvaluator,
    get_offline_evaluator,
    train_evaluator,
)
from polychrome.metrics.fidelity import fid
from polychrome.models import create_model

from .toydata import toy_packed


def tiny_generator():
    return create_model("dcgan", resolution=16, num_domains=3, width=8)


STEPS = 40  # enough to separate colour-coded styles; determinism needs far fewer
TINY = {"batch_size": 16, "width": 8, "progress": False}


def test_training_is_deterministic_and_keeps_global_rng():
    packed = toy_packed()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train_evaluator(packed, steps=5, seed=0, **TINY)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_evaluator(packed, steps=5, seed=0, **TINY)
    c = train_evaluator(packed, steps=5, seed=1, **TINY)
    sa, sb, sc = (e.net.state_dict() for e in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_classifies_colour_coded_styles_and_features_are_meaningful():
    ev = train_evaluator(toy_packed(), steps=STEPS, seed=0, **TINY)
    assert ev.stats["val_style_accuracy"] >= 0.9
    fresh = toy_packed(n_per_style=10, seed=7)  # unseen images
    probs = ev.classify(fresh.images)
    assert probs.shape == (30, 3)
    assert torch.allclose(probs.sum(1), torch.ones(30), atol=1e-5)
    assert ev.style_accuracy(fresh.images, fresh.labels) >= 0.9
    f = ev.features(fresh.images)
    assert f.shape == (30, ev.dim) and torch.isfinite(f).all()
    # same distribution is closer than random noise images
    noise = torch.randint(0, 256, fresh.images.shape, dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    real = ev.features(toy_packed(seed=3).images)
    assert fid(f, real) < fid(ev.features(noise), real)
    # other sizes are resized to the evaluator's input
    assert ev.features(torch.nn.functional.interpolate(
        fresh.images.float(), size=32).to(torch.uint8)).shape == (30, ev.dim)


def test_saved_once_beside_the_dataset_and_reused(toy_dataset: Path):
    # first asked for by a training run on a subset: still trained on the whole version
    subset = load_packed("toy", 16).split("heldout")
    make_training_evaluator(subset, "fid", n=4, dataset=toy_dataset, evaluator_steps=5)(
        tiny_generator(), 0)
    ev = get_offline_evaluator("toy", 16, steps=5)
    assert ev.name == "offline:toy@v1/16"
    assert ev.stats["n_train"] + ev.stats["n_val"] == 72
    where = toy_dataset / "evaluator" / "16"
    assert sorted(p.name for p in where.iterdir()) == ["config.json", "model.safetensors",
                                                        "stats.json"]
    mtime = (where / "model.safetensors").stat().st_mtime_ns
    again = get_offline_evaluator("toy:1", 16, steps=50)  # reused, not retrained
    assert (where / "model.safetensors").stat().st_mtime_ns == mtime
    assert again.stats == ev.stats and again.config.steps == 5
    x = toy_packed(n_per_style=4, seed=9).images
    assert torch.equal(ev.features(x), again.features(x))
    assert torch.equal(OfflineEvaluator.load(where).classify(x), ev.classify(x))
