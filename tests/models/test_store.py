"""The trained-model store: real model directories, real SQLite in the temp home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polychrome.cli.main import main
from polychrome.errors import ModelError, NotFound
from polychrome.models import create_model
from polychrome.persistence.db import session_scope
from polychrome.persistence.models import (
    ModelVersion,
    add_model_version,
    list_models_registered,
    load_model,
    remove_model,
    resolve_model,
    show_model,
    update_metrics,
)

pytestmark = pytest.mark.database  # on SQLite and on PostgreSQL

STYLES = ["ink", "neon", "pastel"]


def make_model_dir(root: Path, *, seed: int = 0, arch: str = "dcgan") -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, resolution=16, num_domains=3, width=8)
    return model.save_pretrained(root, modules=("generator",),
                                 meta={"styles": STYLES, "dataset": "toy:1", "step": 42,
                                       "license": "CC-BY-4.0"})


def test_add_resolve_load_versions(tmp_path: Path, polychrome_home: Path):
    src = make_model_dir(tmp_path / "m1")
    info = add_model_version(src, "toy-gan", source_run="runs/r1", metrics={"fid": 12.5})
    assert info == {"name": "toy-gan", "version": 1, "arch": "dcgan", "family": "noise",
                    "styles": STYLES, "path": str(polychrome_home / "models/toy-gan/1")}
    stored = Path(info["path"])
    assert sorted(p.name for p in stored.iterdir()) == ["card.md", "config.json",
                                                         "model.safetensors"]
    card = (stored / "card.md").read_text()
    for needle in ("dcgan", "ink, neon, pastel", "toy:1", "42", "CC-BY-4.0",
                   "| evaluation | fid |\n|---|---|\n| training | 12.5 |"):
        assert needle in card

    info2 = add_model_version(make_model_dir(tmp_path / "m2", seed=1), "toy-gan")
    assert info2["version"] == 2
    assert resolve_model("toy-gan").version == 2
    ref1 = resolve_model("toy-gan:1")
    assert (ref1.version, ref1.path, ref1.styles) == (1, stored, STYLES)
    assert ref1.spec == "toy-gan:1"

    # the stored copy is the model that was registered, and loads in eval mode
    model = load_model("toy-gan:1")
    assert not model.training and model.model_ref == ref1
    torch.manual_seed(0)
    original = create_model("dcgan", resolution=16, num_domains=3, width=8)
    for k, v in original.generator.state_dict().items():
        assert torch.equal(v, model.generator.state_dict()[k]), k
    with session_scope() as s:
        rows = s.query(ModelVersion).filter_by(name="toy-gan").all()
        assert sorted(r.version for r in rows) == [1, 2]
        assert {r.path for r in rows} == {"models/toy-gan/1", "models/toy-gan/2"}


def test_path_spec_and_not_found(tmp_path: Path):
    src = make_model_dir(tmp_path / "loose")
    ref = resolve_model(str(src))
    assert ref.name is None and ref.version is None and ref.arch == "dcgan"
    assert ref.spec == str(src.resolve())
    assert load_model(str(src)).style_names == STYLES

    add_model_version(src, "alpha")
    with pytest.raises(NotFound, match="known models: alpha"):
        resolve_model("beta")
    with pytest.raises(NotFound, match="no version 7; versions: 1"):
        resolve_model("alpha:7")
    with pytest.raises(NotFound):
        resolve_model(str(tmp_path / "missing-dir"))
    with pytest.raises(NotFound, match="known models"):
        show_model("beta")


def test_bad_name_and_bad_model_dir_leave_nothing(tmp_path: Path, polychrome_home: Path):
    src = make_model_dir(tmp_path / "m")
    for bad in ("", "-x", "a/b", "x" * 65, "name with space"):
        with pytest.raises(ModelError, match="invalid model name"):
            add_model_version(src, bad)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((src / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError):
        add_model_version(broken, "broken")
    with pytest.raises(ModelError, match="not a model directory"):
        add_model_version(tmp_path, "empty")
    assert not (polychrome_home / "models" / "broken").exists()
    assert list((polychrome_home / "tmp").iterdir()) == []
    assert list_models_registered() == []


def test_list_show_update_remove(tmp_path: Path, polychrome_home: Path):
    add_model_version(make_model_dir(tmp_path / "a"), "a-model")
    add_model_version(make_model_dir(tmp_path / "b"), "b-model")
    add_model_version(make_model_dir(tmp_path / "b2"), "b-model")
    listing = {m["name"]: m for m in list_models_registered()}
    assert listing["b-model"]["versions"] == [1, 2]
    assert listing["b-model"]["latest_version"] == 2
    assert listing["a-model"]["styles"] == STYLES

    merged = update_metrics("b-model", 1, {"offline:toy@v1/16": {"fid": 3.25, "n": 100}})
    assert merged == {"offline:toy@v1/16": {"fid": 3.25, "n": 100}}
    shown = show_model("b-model:1")
    assert shown["version"] == 1 and shown["latest_version"] == 2
    assert "| evaluation | n | fid |\n|---|---|---|\n| offline:toy@v1/16 | 100 | 3.25 |" in shown["card"]
    assert shown["card"] == (polychrome_home / "models/b-model/1/card.md").read_text()
    assert show_model("b-model")["version"] == 2
    with session_scope() as s:
        assert s.query(ModelVersion).filter_by(name="b-model", version=1).one().score == 3.25

    assert remove_model("b-model", 1) == [1]
    assert not (polychrome_home / "models/b-model/1").exists()
    assert resolve_model("b-model").version == 2
    assert remove_model("b-model") == [2]
    assert not (polychrome_home / "models/b-model").exists()
    with pytest.raises(NotFound):
        remove_model("b-model")
    # numbering continues after the highest version ever seen on disk or in the index
    assert add_model_version(make_model_dir(tmp_path / "a2"), "a-model")["version"] == 2


def test_bundled_is_indexed_in_place_and_never_deleted(tmp_path: Path):
    src = make_model_dir(tmp_path / "shipped")
    info = add_model_version(src, "demo", bundled=True)
    assert Path(info["path"]) == src.resolve()
    assert not (src / "card.md").exists()  # package dirs may be read-only
    update_metrics("demo", None, {"fid": 1.5})
    assert "| training | 1.5 |" in show_model("demo")["card"]
    remove_model("demo")
    assert (src / "model.safetensors").is_file()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_models_list_show_remove(tmp_path: Path, capsys):
    add_model_version(make_model_dir(tmp_path / "m"), "cli-model")
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert code == 0
    assert [m["name"] for m in json.loads(out)["models"]] == ["cli-model"]
    code, out, _ = run_cli(capsys, "models", "show", "cli-model", "--json")
    assert code == 0 and json.loads(out)["arch"] == "dcgan"
    code, out, err = run_cli(capsys, "models", "show", "nope")
    assert code == 2 and out == "" and err.startswith("error: no model named 'nope'")
    assert "Traceback" not in err
    code, out, _ = run_cli(capsys, "models", "remove", "cli-model", "--json")
    assert code == 0 and json.loads(out) == {"name": "cli-model", "removed_versions": [1]}


def test_cli_register_exports_a_training_run(tmp_path: Path, polychrome_home: Path, capsys):
    from metrics.toydata import write_dataset

    write_dataset(polychrome_home, "toy", n_per_style=4)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model_config: {width: 8}\ncheckpoint_every: 2\nsample_every: 0\n")
    run = tmp_path / "run"
    assert main(["train", "dcgan", "--dataset", "toy", "--config", str(cfg), "--steps", "2",
                 "--batch-size", "4", "--resolution", "16", "--run-dir", str(run),
                 "--json"]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "models", "register", str(run), "--name", "from-run",
                           "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["name"], info["version"], info["arch"]) == ("from-run", 1, "dcgan")
    assert info["styles"] == ["blue", "green", "red"]
    assert resolve_model("from-run").path == polychrome_home / "models/from-run/1"
    assert "toy:1" in show_model("from-run")["card"]
    assert list((polychrome_home / "tmp").iterdir()) == []  # the export scratch is gone
    code, out, err = run_cli(capsys, "models", "register", str(tmp_path / "nope"), "--name",
                             "x")
    assert code == 2 and "does not exist" in err


def test_a_model_from_a_newer_format_is_refused_clearly(tmp_path: Path):
    from polychrome.models import GANModel

    d = make_model_dir(tmp_path / "m")
    spec = json.loads((d / "config.json").read_text())
    assert spec["format_version"] == 1
    (d / "config.json").write_text(json.dumps({**spec, "format_version": 7}))
    with pytest.raises(ModelError, match="newer than this release") as err:
        GANModel.from_pretrained(d)
    assert err.value.code == "newer_format"
    with pytest.raises(ModelError, match="newer"):
        add_model_version(d, "future")  # and the store does not index it
    with pytest.raises(NotFound):
        resolve_model("future")
