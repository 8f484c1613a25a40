"""The offline evaluator: deterministic training, caching beside the dataset, classification."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polychrome.data.cache import load_packed
from polychrome.metrics.api import make_training_evaluator
from polychrome.metrics.evaluator import (
    OfflineEvaluator,
    get_offline_evaluator,
    train_evaluator,
)
from polychrome.metrics.fidelity import fid
from polychrome.metrics.instrument import EvaluatorUnusable
from polychrome.models import create_model

from .toydata import toy_packed

pytestmark = pytest.mark.usefixtures("one_thread")


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
    hook = make_training_evaluator(subset, "fid", n=4, dataset=toy_dataset, evaluator_steps=5)
    with pytest.raises(EvaluatorUnusable):  # 5 steps: saved, but under the bar
        hook(tiny_generator(), 0)
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


def test_rotation_and_per_style_accuracy_on_held_out_images():
    packed = toy_packed()
    ev = train_evaluator(packed, steps=STEPS, seed=0, **TINY)
    per_style = ev.stats["val_style_accuracy_per_style"]
    assert set(per_style) == set(packed.domains) and min(per_style.values()) >= 0.5
    held = packed.split("heldout")
    assert ev.rotation_accuracy(held.images) == ev.stats["val_rotation_accuracy"]


def test_replace_retrains_a_saved_evaluator(toy_dataset: Path):
    first = get_offline_evaluator("toy", 16, steps=2)
    where = toy_dataset / "evaluator" / "16"
    again = get_offline_evaluator("toy", 16, steps=7, replace=True)
    assert again.config.steps == 7 and OfflineEvaluator.load(where).config.steps == 7
    assert first.config.steps == 2
    assert sorted(p.name for p in where.parent.iterdir()) == ["16"]


def test_crops_mode_learns_from_crops_at_the_scale_range(polychrome_home: Path):
    from polychrome.data.crops import load_crops_dir
    from polychrome.metrics.evaluator import crops_training_view

    from .toydata import write_dataset

    root = write_dataset(polychrome_home, "big", n_per_style=6, size=40)
    ev = get_offline_evaluator("big", 16, steps=3, scale=(16, 40))
    assert ev.name == "offline-crops:big@v1/16@16-40"
    where = root / "evaluator" / "crops-16-16-40"
    assert (where / "config.json").is_file() and not (root / "evaluator" / "16").exists()
    store = load_crops_dir(root, 16, (16, 40))
    view = crops_training_view(store, per_picture=2)
    assert view.images.shape == (2 * len(store), 3, 16, 16)
    assert view.files == list(store.files) * 2  # same stems: the held-out split still holds
    assert torch.equal(view.images, crops_training_view(store, per_picture=2).images)
    assert get_offline_evaluator("big", 16, steps=50, scale=[16, 40]).config.steps == 3
