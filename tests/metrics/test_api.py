"""Evaluating generators end to end: evaluate_generator, the training hook, `polychrome eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polychrome.cli.main import main
from polychrome.errors import ConfigError
from polychrome.metrics.api import evaluate_generator, make_training_evaluator, resolve_extractor
from polychrome.metrics.evaluator import train_evaluator
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version, show_model

from .toydata import toy_packed

STYLES = ["blue", "green", "red"]  # the toy dataset's styles, sorted


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("dcgan", resolution=16, num_domains=3, width=8)
    model.meta.update(styles=STYLES, dataset="toy:1")
    return model


class CountingExtractor:
    """A real offline evaluator, counting how many images it was asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.seen = inner, inner.name, 0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return self.inner.features(images)


@pytest.fixture(scope="module")
def evaluator():
    return train_evaluator(toy_packed(), name="offline:toy@v1/16", steps=5, width=8,
                           batch_size=16, progress=False)


def test_evaluate_generator_reports_every_metric(evaluator):
    packed = toy_packed()
    out = evaluate_generator(tiny_model(), packed, metrics="fid,kid,pr", n=20,
                             extractor=evaluator)
    assert out["extractor"] == "offline:toy@v1/16"
    assert (out["n"], out["n_real"], out["split"]) == (20, 72, "all")
    m = out["metrics"]
    assert set(m) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    assert m["fid"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    held = evaluate_generator(tiny_model(), packed, metrics=("fid",), n=20, extractor=evaluator,
                              split="heldout")
    assert 0 < held["n_real"] < 72
    with pytest.raises(ConfigError, match="offline extractor belongs to a dataset"):
        resolve_extractor("offline")
    with pytest.raises(ConfigError, match="unknown extractor 'clip'"):
        resolve_extractor("clip")


def test_offline_without_a_dataset_trains_a_content_named_evaluator():
    packed = toy_packed(n_per_style=6)
    first = evaluate_generator(tiny_model(), packed, metrics="fid", n=8, extractor="offline",
                               evaluator_steps=2)
    assert first["extractor"].startswith("offline:data-") and first["extractor"].endswith("/16")
    again = evaluate_generator(tiny_model(), packed, metrics="fid", n=8, extractor="offline",
                               evaluator_steps=2)
    assert again == first  # deterministic training: same images, same evaluator, same number


def test_training_hook_caches_real_features_and_keeps_rng(evaluator):
    packed = toy_packed()
    counting = CountingExtractor(evaluator)
    evaluate = make_training_evaluator(packed, ("fid", "kid"), n=16, extractor=counting)
    model = tiny_model()
    model.train()
    torch.manual_seed(5)
    rng_before = torch.get_rng_state()
    first = evaluate(model, 100)
    assert counting.seen == len(packed) + 16
    assert torch.equal(torch.get_rng_state(), rng_before) and model.training
    assert evaluate(model, 200) == first  # same latents, same model -> same numbers
    assert counting.seen == len(packed) + 32  # real features were not recomputed
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert evaluate(model, 300)["fid"] != first["fid"]
    assert set(first) == {"fid", "kid_mean", "kid_std"}


def test_cli_eval_json_records_on_the_model_card(toy_dataset: Path, tmp_path: Path, capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m", modules=("generator",), meta=model.meta)
    add_model_version(tmp_path / "m", "toy-dcgan")
    args = ["eval", "toy-dcgan", "--dataset", "toy", "--metrics", "fid,kid,pr", "--n", "24",
            "--evaluator-steps", "5", "--json"]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    result = json.loads(out)
    assert result["model"] == "toy-dcgan:1" and result["dataset"] == "toy:1"
    assert result["extractor"] == "offline:toy@v1/16" and result["n"] == 24
    assert set(result["metrics"]) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    recorded = show_model("toy-dcgan")
    assert recorded["metrics"]["offline:toy@v1/16"]["fid"] == result["metrics"]["fid"]
    assert "| offline:toy@v1/16 | toy:1 | all | 24 |" in recorded["card"]
    # the evaluator is reused and sampling is seeded: the same command gives the same numbers
    assert main(args) == 0
    again = json.loads(capsys.readouterr()[0])
    assert again["metrics"] == result["metrics"]
    # dataset defaults to the one in the model's meta; a bad metric is a one-line error
    assert main(["eval", "toy-dcgan", "--metrics", "fid", "--n", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr()[0])["dataset"] == "toy:1"
    assert main(["eval", "toy-dcgan", "--metrics", "fid,lpips"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: unknown metric 'lpips'")
