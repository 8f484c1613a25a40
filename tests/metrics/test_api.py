"""Evaluating generators end to end: evaluate_generator, the training hook, `polychrome eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polychrome.cli.main import main
from polychrome.errors import ConfigError
from polychrome.metrics.api import evaluate_generator, make_training_evaluator, resolve_extractor
from polychrome.metrics.instrument import EvaluatorUnusable
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version, show_model

from .toydata import shapes_packed

STYLES = ["flat", "outline", "shadow", "striped"]  # the shapes dataset's styles, sorted
CONTEXT = {"fid_floor", "fid_ceiling", "fid_position"}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("dcgan", resolution=16, num_domains=4, width=8)
    model.meta.update(styles=STYLES, dataset="shapes:1")
    return model


class CountingExtractor:
    """A real offline evaluator, counting how many images it was asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.seen = inner, inner.name, 0
        self.styles, self.classify = inner.styles, inner.classify
        self.rotation_accuracy = inner.rotation_accuracy

    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return self.inner.features(images)


def test_evaluate_generator_reports_every_metric(shapes, shapes_evaluator):
    out = evaluate_generator(tiny_model(), shapes, metrics="fid,kid,pr", n=20,
                             extractor=shapes_evaluator)
    assert out["extractor"] == "offline:shapes@v1/16"
    assert (out["n"], out["n_real"], out["split"]) == (20, len(shapes), "all")
    m = out["metrics"]
    assert set(m) == {"fid", "kid_mean", "kid_std", "precision", "recall"} | CONTEXT
    assert m["fid"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert m["fid_ceiling"] > m["fid_floor"] > 0
    assert m["fid_position"] == pytest.approx(
        (m["fid"] - m["fid_floor"]) / (m["fid_ceiling"] - m["fid_floor"]))
    # the instrument measured in the same run, and the samples' styles as it sees them
    assert out["instrument"]["usable"] and out["instrument"]["evaluator"] == out["extractor"]
    assert set(out["instrument"]["accuracy"]["per_style"]) == set(STYLES)
    acc = out["sample_accuracy"]
    assert set(acc) <= {"sample_accuracy"} | {f"sample_accuracy[{s}]" for s in STYLES}
    assert 0 <= acc["sample_accuracy"] <= 1
    held = evaluate_generator(tiny_model(), shapes, metrics=("fid",), n=20,
                              extractor=shapes_evaluator, split="heldout")
    assert 0 < held["n_real"] < len(shapes)
    with pytest.raises(ConfigError, match="offline extractor belongs to a dataset"):
        resolve_extractor("offline")
    with pytest.raises(ConfigError, match="unknown extractor 'clip'"):
        resolve_extractor("clip")


def test_offline_without_a_dataset_trains_a_content_named_evaluator():
    packed = shapes_packed(n=60)
    steps = 150  # enough for these 240 images to clear the bar
    first = evaluate_generator(tiny_model(), packed, metrics="fid", n=8, extractor="offline",
                               evaluator_steps=steps)
    assert first["extractor"].startswith("offline:data-") and first["extractor"].endswith("/16")
    again = evaluate_generator(tiny_model(), packed, metrics="fid", n=8, extractor="offline",
                               evaluator_steps=steps)
    assert again == first  # deterministic training: same images, same evaluator, same number
    # a barely trained one is refused, and the message says how to get a usable one
    with pytest.raises(EvaluatorUnusable, match="--evaluator-steps"):
        evaluate_generator(tiny_model(), packed, metrics="fid", n=8, extractor="offline",
                           evaluator_steps=1)


def test_training_hook_caches_real_features_and_keeps_rng(shapes, shapes_evaluator):
    counting = CountingExtractor(shapes_evaluator)
    evaluate = make_training_evaluator(shapes, ("fid", "kid"), n=16, extractor=counting)
    model = tiny_model()
    model.train()
    torch.manual_seed(5)
    rng_before = torch.get_rng_state()
    first = evaluate(model, 100)
    prepared = counting.seen  # the instrument's references, the real set and 16 samples
    assert prepared > len(shapes) + 16
    assert torch.equal(torch.get_rng_state(), rng_before) and model.training
    assert evaluate(model, 200) == first  # same latents, same model -> same numbers
    assert counting.seen == prepared + 16  # real features and references were not recomputed
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert evaluate(model, 300)["fid"] != first["fid"]
    assert set(first) == {"fid", "kid_mean", "kid_std", "evaluator_accuracy",
                          "sample_accuracy"} | CONTEXT
    assert first["evaluator_accuracy"] >= 0.5


def test_training_hook_refuses_a_chance_level_evaluator(shapes):
    evaluate = make_training_evaluator(shapes, ("fid",), n=8, extractor="offline",
                                       evaluator_steps=1)
    for step in (1, 2):  # refused every time, the evaluator trained once
        with pytest.raises(EvaluatorUnusable, match="no figures reported"):
            evaluate(tiny_model(), step)


def test_cli_eval_json_records_on_the_model_card(shapes_dataset: Path, tmp_path: Path,
                                                capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m", modules=("generator",), meta=model.meta)
    add_model_version(tmp_path / "m", "toy-dcgan")
    args = ["eval", "toy-dcgan", "--dataset", "shapes", "--metrics", "fid,kid,pr", "--n", "24",
            "--json"]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1  # exactly one JSON object
    result = json.loads(out)
    assert result["model"] == "toy-dcgan:1" and result["dataset"] == "shapes:1"
    assert result["extractor"] == "offline:shapes@v1/16" and result["n"] == 24
    assert set(result["metrics"]) == {"fid", "kid_mean", "kid_std", "precision",
                                      "recall"} | CONTEXT
    inst = result["instrument"]  # the instrument's quality, beside the figures
    assert inst["usable"] and inst["problems"] == []
    assert inst["accuracy"]["accuracy"] >= inst["accuracy"]["required"] > 0.25
    assert set(inst["accuracy"]["per_style"]) == set(STYLES)
    refs = inst["reference"]
    assert refs["floor"] < min(refs["blurred"], refs["noised"], refs["ceiling"])
    recorded = show_model("toy-dcgan")
    row = recorded["metrics"]["offline:shapes@v1/16"]
    assert row["fid"] == result["metrics"]["fid"]
    assert row["fid_position"] == result["metrics"]["fid_position"]
    assert row["evaluator_accuracy"] == inst["accuracy"]["accuracy"]
    assert {f"evaluator_accuracy[{s}]" for s in STYLES} <= set(row)
    assert "| offline:shapes@v1/16 | shapes:1 | all | 24 |" in recorded["card"]
    assert "| offline:shapes@v1/16 | evaluator_accuracy | " in recorded["card"]  # per style
    assert "fid_position" in recorded["card"] and "0 at the floor" in recorded["card"]
    # the evaluator is reused and sampling is seeded: the same command gives the same numbers
    assert main(args) == 0
    again = json.loads(capsys.readouterr()[0])
    assert again["metrics"] == result["metrics"] and again["instrument"] == inst
    # the text report prints the instrument beside the figures
    assert main(args[:-1]) == 0
    text = capsys.readouterr()[0]
    assert "floor" in text and "ceiling" in text and "held-out accuracy (style head)" in text
    # dataset defaults to the one in the model's meta; a bad metric is a one-line error
    assert main(["eval", "toy-dcgan", "--metrics", "fid", "--n", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr()[0])["dataset"] == "shapes:1"
    assert main(["eval", "toy-dcgan", "--metrics", "fid,lpips"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: unknown metric 'lpips'")
