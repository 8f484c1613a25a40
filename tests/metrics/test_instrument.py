"""The instrument's quality: figures come with it, and are refused below the bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polychrome.cli.main import main
from polychrome.data.cache import PackedDataset
from polychrome.metrics.api import evaluate_generator
from polychrome.metrics.evaluator import OfflineEvaluator, train_evaluator
from polychrome.metrics.instrument import (
    Bar,
    EvaluatorUnusable,
    blurred,
    format_instrument,
    halves,
    measure_instrument,
    noised,
)
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version, show_model

from .conftest import EVALUATOR_STEPS
from .toydata import write_shapes_dataset

STYLES = ["flat", "outline", "shadow", "striped"]

pytestmark = pytest.mark.usefixtures("one_thread")


def noise_generator():
    """An untrained MLP generator with its weights scaled up: every pixel is a saturated
    random projection of the latent, i.e. the model draws noise."""
    torch.manual_seed(0)
    model = create_model("mlp-gan", resolution=16, num_domains=4, width=64, num_layers=2)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.mul_(3.0)
    model.meta.update(styles=STYLES, dataset="shapes:1")
    return model


def test_reference_distances_are_ordered(shapes, shapes_evaluator):
    held = shapes.split("heldout")
    inst = measure_instrument(shapes_evaluator, held, bar=Bar())
    assert inst["usable"], inst["problems"]
    refs = inst["reference"]
    assert refs["n_half"] == len(held) // 2
    floor = refs["floor"]
    assert 0 < floor < refs["noised"] and floor < refs["blurred"] and floor < refs["ceiling"]
    assert min(refs["noised"], refs["blurred"]) >= 3 * floor  # the default bar's margin
    assert refs["floor_per_style"] < refs["other_style"] / 3
    assert set(refs["per_style"]) == set(STYLES)
    for entry in refs["per_style"].values():
        assert entry["floor"] < entry["other_style"] and entry["floor"] < entry["ceiling"]
    acc = inst["accuracy"]
    assert acc["head"] == "style" and acc["chance"] == pytest.approx(0.25)
    assert acc["required"] == pytest.approx(0.5) and acc["accuracy"] >= 0.5
    assert set(acc["per_style"]) == set(STYLES) and 0 <= acc["rotation_accuracy"] <= 1
    assert measure_instrument(shapes_evaluator, held, bar=Bar()) == inst  # seeded


def test_reference_images_and_halves():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    b = blurred(x)
    assert b.shape == x.shape and b.dtype == torch.uint8
    assert b.float().std() < x.float().std()  # detail is gone
    n = noised(x, torch.Generator().manual_seed(1))
    assert n.shape == x.shape and not torch.equal(n, x)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    a, b2 = halves(labels, seed=0)
    assert sorted(a + b2) == list(range(10)) and not set(a) & set(b2)
    assert [int((labels[a] == k).sum()) for k in (0, 1)] == [2, 3]  # each style split evenly
    assert halves(labels, seed=0) == (a, b2)


@pytest.fixture(scope="module")
def chance_evaluator(shapes) -> OfflineEvaluator:
    return train_evaluator(shapes, steps=0, progress=False)  # never trained


def test_a_chance_level_evaluator_is_under_the_bar(shapes, chance_evaluator):
    chance = chance_evaluator
    inst = measure_instrument(chance, shapes.split("heldout"), bar=Bar())
    assert not inst["usable"]
    assert any("classifier is right on" in p for p in inst["problems"])
    with pytest.raises(EvaluatorUnusable, match="no figures reported"):
        evaluate_generator(noise_generator(), shapes, metrics="fid", n=16, extractor=chance)


def test_a_noise_generator_gets_a_fid_near_the_ceiling(shapes, shapes_evaluator):
    out = evaluate_generator(noise_generator(), shapes, metrics="fid,kid", n=64,
                             extractor=shapes_evaluator)
    m = out["metrics"]
    assert m["fid"] > 10 * m["fid_floor"]  # far above the floor
    assert 0.8 <= m["fid_position"] <= 1.25  # near the ceiling (real vs noise images)
    assert m["fid_ceiling"] == out["instrument"]["reference"]["ceiling"]
    # the evaluator's classifier on the samples of each style: noise is no style
    acc = out["sample_accuracy"]
    assert set(acc) == {"sample_accuracy"} | {f"sample_accuracy[{s}]" for s in STYLES}
    assert acc["sample_accuracy"] <= 0.5


def test_the_bar_is_a_setting(shapes, shapes_evaluator, monkeypatch):
    monkeypatch.setenv("POLYCHROME_EVAL_MIN_SEPARATION", "1000000")
    with pytest.raises(EvaluatorUnusable, match="the real-vs-real floor away"):
        evaluate_generator(noise_generator(), shapes, metrics="fid", n=8,
                           extractor=shapes_evaluator)


def test_cli_refuses_figures_and_leaves_the_card_untouched(shapes_dataset: Path, shapes,
                                                           tmp_path: Path, capsys):
    where = shapes_dataset / "evaluator" / "16"
    train_evaluator(shapes, name="offline:shapes@v1/16", steps=0, progress=False).save(where)
    model = noise_generator()
    model.save_pretrained(tmp_path / "m", modules=("generator",), meta=model.meta)
    add_model_version(tmp_path / "m", "noisy")
    card_file = Path(show_model("noisy")["path"]) / "card.md"
    card = card_file.read_text()
    for args in (["--json"], []):
        code = main(["eval", "noisy", "--metrics", "fid,kid,pr", "--n", "16", *args])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and "Traceback" not in err
        assert err.startswith("error: no figures reported: the evaluator offline:shapes@v1/16")
        assert "--evaluator-steps" in err and "above its 0 steps" in err
    assert show_model("noisy")["metrics"] == {} and card_file.read_text() == card
    assert OfflineEvaluator.load(where).config.steps == 0  # kept: no more steps were asked
    # asking for more steps replaces the refused evaluator; then the figures are recorded
    code = main(["eval", "noisy", "--metrics", "fid", "--n", "32", "--json",
                 "--evaluator-steps", str(EVALUATOR_STEPS)])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["instrument"]["usable"]
    assert OfflineEvaluator.load(where).config.steps == EVALUATOR_STEPS
    assert result["metrics"]["fid_position"] > 0.8
    row = show_model("noisy")["metrics"]["offline:shapes@v1/16"]
    assert row["fid_floor"] == result["metrics"]["fid_floor"]
    assert row["evaluator_accuracy"] == result["instrument"]["accuracy"]["accuracy"]
    assert "sample_accuracy[striped]" in row
    assert "| offline:shapes@v1/16 | sample_accuracy | " in card_file.read_text()


def test_crops_models_are_measured_with_the_crops_evaluator(polychrome_home: Path,
                                                            tmp_path: Path, capsys):
    root = write_shapes_dataset(polychrome_home, n=60, size=48)
    torch.manual_seed(0)
    model = create_model("stargan", resolution=16, num_domains=4, width=8, max_width=16,
                         style_dim=8, latent_dim=4, mapping_dim=16, mapping_shared_layers=2,
                         mapping_head_layers=2, e_width=8, e_max_width=16, d_width=8,
                         d_max_width=16)
    model.save_pretrained(tmp_path / "m", modules=model.inference_modules, meta={
        "styles": STYLES, "dataset": "shapes:1", "fit": "crops", "crop": 16, "scale": [16, 48]})
    add_model_version(tmp_path / "m", "crops-star")
    code = main(["eval", "crops-star", "--evaluator-steps", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "the evaluator offline-crops:shapes@v1/16@16-48 cannot be trusted" in err
    saved = root / "evaluator" / "crops-16-16-48"
    assert OfflineEvaluator.load(saved).config.steps == 2
    assert not (root / "evaluator" / "16").exists()  # not the whole-picture evaluator
    code = main(["eval", "crops-star", "--evaluator-steps", str(EVALUATOR_STEPS), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["extractor"] == "offline-crops:shapes@v1/16@16-48"
    assert result["instrument"]["usable"] and set(result["translation"]["fid_per_style"]) == \
        set(STYLES)
    assert OfflineEvaluator.load(saved).config.steps == EVALUATOR_STEPS


def test_one_style_is_judged_by_the_rotation_head(shapes):
    rows = (shapes.labels == 0).nonzero().flatten()
    one = PackedDataset(images=shapes.images[rows], labels=torch.zeros(len(rows), dtype=torch.long),
                        domains=["flat"], files=[shapes.files[i] for i in rows.tolist()],
                        resolution=16)
    ev = train_evaluator(one, steps=0, progress=False)
    held = one.split("heldout")
    acc = measure_instrument(ev, held, bar=Bar())["accuracy"]
    assert acc["head"] == "rotation" and acc["chance"] == 0.25 and acc["per_style"] == {}
    assert acc["accuracy"] == acc["rotation_accuracy"] == ev.rotation_accuracy(held.images)
    assert acc["required"] == pytest.approx(0.5)


def test_a_large_style_cannot_hide_a_small_one(shapes, shapes_evaluator):
    # all held-out images of one style and only three of another: the overall figure is the
    # mean over styles (balanced accuracy), so the three weigh as much as all the others
    held = shapes.split("heldout")
    flat = (held.labels == 0).nonzero().flatten().tolist()
    striped = (held.labels == 3).nonzero().flatten().tolist()[:3]
    rows = flat + striped
    mixed = PackedDataset(images=held.images[rows],
                          labels=torch.tensor([0] * len(flat) + [1] * len(striped)),
                          domains=["flat", "striped"], files=[held.files[i] for i in rows],
                          resolution=16)
    acc = measure_instrument(shapes_evaluator, mixed, bar=Bar())["accuracy"]
    assert acc["chance"] == 0.5 and acc["required"] == pytest.approx(0.7)
    assert acc["accuracy"] == pytest.approx(sum(acc["per_style"].values()) / 2)


class FeaturesOnly:
    """A real evaluator's features without its classifier, as the inception extractor is."""

    def __init__(self, inner):
        self.name, self.features = "features-only", inner.features


def test_without_a_classifier_the_references_decide(shapes, shapes_evaluator, chance_evaluator):
    held = shapes.split("heldout")
    inst = measure_instrument(FeaturesOnly(shapes_evaluator), held, bar=Bar())
    assert inst["accuracy"] is None and inst["usable"]
    assert inst["reference"] == measure_instrument(shapes_evaluator, held)["reference"]
    assert any("no classifier" in line for line in format_instrument(inst))
    # untrained features blur nothing apart: refused on the references alone
    blind = measure_instrument(FeaturesOnly(chance_evaluator), held, bar=Bar())
    assert blind["accuracy"] is None and not blind["usable"]
    assert all("floor away" in p for p in blind["problems"])
