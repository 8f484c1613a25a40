"""`polychrome models list`: a readable table of the main metrics (per style where they
were measured per style); --json keeps every figure."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from polychrome.cli.main import main
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version

STYLES = ["ink", "neon", "pastel"]
NOISE = {"fid": 3.4605, "kid_mean": 0.04805, "kid_std": 0.0056, "precision": 0.741,
         "recall": 0.545, "n": 2000, "extractor": "offline:toy@v1/16",
         "at_initialisation": {"fid": 70.6, "kid_mean": 2.0}}
TRANSLATION = {"style_accuracy": 0.7705, "style_accuracy_ref": 0.7275, "paired_l1": 0.18269,
               "identity_l1": 0.1923, "diversity_l1": 0.09406, "seed": 0, "n_pairs": 2000,
               "fid_per_style": {"ink": 5.0878, "neon": 2.8123, "pastel": 0.49304},
               "kid_per_style": {"ink": 0.14398, "neon": 0.0579, "pastel": 0.004452}}


def _model_dir(root: Path, arch: str) -> Path:
    torch.manual_seed(0)
    if arch == "dcgan":
        model, modules = create_model(arch, resolution=16, num_domains=3, width=8), \
            ("generator",)
    else:
        model = create_model(arch, resolution=16, num_domains=3, width=8, max_width=16,
                             style_dim=8, latent_dim=4, mapping_dim=16, e_width=8,
                             e_max_width=16, d_width=8, d_max_width=16)
        modules = tuple(model.inference_modules)
    return model.save_pretrained(root, modules=modules, meta={"styles": STYLES, "step": 1})


def test_models_list_is_a_table_with_per_style_figures(tmp_path, capsys):
    add_model_version(_model_dir(tmp_path / "a", "dcgan"), "toy-gan", metrics=NOISE)
    add_model_version(_model_dir(tmp_path / "a", "dcgan"), "toy-gan", metrics=NOISE)
    add_model_version(_model_dir(tmp_path / "b", "stargan"), "toy-stargan",
                      metrics=TRANSLATION)
    add_model_version(_model_dir(tmp_path / "c", "dcgan"), "untested")
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "version", "arch", "styles", "main", "metrics"]
    column = lines[0].index("main metrics")
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert rows["toy-gan"].split()[:5] == ["toy-gan", "v2", "(2)", "dcgan", "3"]
    assert rows["toy-gan"][column:] == "FID 3.46, KID 0.048, precision 0.74, recall 0.55"
    assert rows["toy-stargan"][column:] == \
        "style accuracy 0.77, paired L1 0.183, diversity 0.094"
    assert rows["untested"][column:] == "-"
    # the per-style figures: a table of their own, one row per style
    assert lines[4] == "" and lines[5] == "toy-stargan v1, per style:"
    assert [line.split() for line in lines[6:]] == [
        ["style", "FID", "KID"], ["ink", "5.09", "0.144"], ["neon", "2.81", "0.0579"],
        ["pastel", "0.493", "0.00445"]]
    assert all(len(line) <= 100 for line in lines)  # no more raw keys run together

    assert main(["models", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    listed = {m["name"]: m for m in json.loads(out)["models"]}
    assert listed["toy-stargan"]["metrics"] == TRANSLATION  # every figure, as stored
    assert listed["toy-gan"]["metrics"] == NOISE and listed["toy-gan"]["versions"] == [1, 2]
