"""`polychrome train` through the real CLI entry point, on a dataset in the temp home."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from polychrome.cli.main import main
from polychrome.models import GANModel
from polychrome.training.checkpoint import latest_checkpoint, load_checkpoint

from .helpers import make_dataset_dir

SRC = Path(__file__).resolve().parents[2] / "src"


def _config(tmp_path: Path, **extra) -> Path:
    cfg = {"model_config": {"width": 8}, "checkpoint_every": 2, "sample_every": 2,
           "log_every": 1, "steps": 1000, "seed": 3, **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _json_line(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must hold exactly one JSON object, got {out!r}"
    return json.loads(lines[0])


def test_train_json_registers_the_ema_model(polychrome_home, tmp_path, capsys):
    make_dataset_dir(polychrome_home)
    run = tmp_path / "run"
    rc = main(["train", "dcgan", "--dataset", "toy", "--config", str(_config(tmp_path)),
               "--steps", "3", "--batch-size", "8", "--resolution", "16", "--run-dir", str(run),
               "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    res = _json_line(out)
    assert res["run_dir"] == str(run) and res["steps"] == 3
    assert {"loss_d", "loss_g"} <= set(res["final"]) and res["images_per_second"] > 0
    assert res["model"]["name"] == "toy-dcgan" and res["model"]["version"] == 1
    model = GANModel.from_pretrained(res["model"]["path"])
    assert model.meta["styles"] == ["ink", "neon"] and model.meta["dataset"] == "toy:1"
    assert model.meta["step"] == 3 and model.meta["run"] == "run"
    # the resolved config: flags override the YAML, YAML overrides defaults, defaults filled
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["steps"] == 3 and saved["seed"] == 3 and saved["checkpoint_every"] == 2
    assert saved["loss"] == "ns" and saved["lr_g"] == 2e-4 and saved["name"] == "toy-dcgan"
    _, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert state["config"] == saved
    assert (run / "samples" / "step-000002.png").is_file()
    assert (run / "samples" / "step-000003.png").is_file()  # the final grid


def test_train_resume_and_default_run_dir(polychrome_home, tmp_path, capsys):
    make_dataset_dir(polychrome_home)
    rc = main(["train", "dcgan", "--dataset", "toy:1", "--config", str(_config(tmp_path)),
               "--steps", "2", "--batch-size", "8", "--resolution", "16", "--name", "mine",
               "--json"])
    first = _json_line(capsys.readouterr().out)
    assert rc == 0
    run = Path(first["run_dir"])
    assert run.parent == polychrome_home / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}-dcgan-toy", run.name)
    assert first["model"]["name"] == "mine"
    rc = main(["train", "--resume", str(run), "--steps", "4", "--json"])
    second = _json_line(capsys.readouterr().out)
    assert rc == 0 and second["steps"] == 4 and second["run_dir"] == str(run)
    assert second["model"] == {"name": "mine", "version": 2,
                               "path": str(polychrome_home / "models" / "mine" / "2")}


@pytest.mark.parametrize("argv, needle", [
    (["train", "nosuchgan", "--dataset", "toy"], "unknown model"),
    (["train", "dcgan", "--dataset", "nosuchdata"], "nosuchdata"),
    (["train", "dcgan"], "--dataset"),
    (["train", "--dataset", "toy"], "MODEL"),
    (["train", "dcgan", "--dataset", "toy", "--config", "{bad}"], "unknown config key"),
    (["train", "dcgan", "--dataset", "toy", "--config", "missing.yaml"], "not found"),
    (["train", "dcgan", "--dataset", "toy", "--steps", "-1"], "steps"),
    (["train", "dcgan", "--dataset", "toy", "--name", "bad name!"], "invalid model name"),
    (["train", "--resume", "{run}", "dcgan"], "--resume"),
    (["train", "--resume", "{nowhere}"], "no run directory"),
])
def test_user_errors_are_one_line_exit_2(polychrome_home, tmp_path, capsys, argv, needle):
    make_dataset_dir(polychrome_home)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_config: {width: 8}\nlearning_rate: 3\n")
    (tmp_path / "run").mkdir()
    subst = {"{bad}": str(bad), "{run}": str(tmp_path / "run"),
             "{nowhere}": str(tmp_path / "nowhere"),
             "missing.yaml": str(tmp_path / "missing.yaml")}
    rc = main([subst.get(a, a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert "Traceback" not in captured.err


def test_every_torch_load_in_the_source_tree_is_weights_only():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "load" and \
                    isinstance(f.value, ast.Name) and f.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in node.keywords)
                if not safe:
                    offenders.append(f"{path}:{node.lineno}")
    assert not offenders, offenders


def test_checkpoint_tensors_are_plain(polychrome_home, tmp_path, capsys):
    make_dataset_dir(polychrome_home)
    run = tmp_path / "run"
    assert main(["train", "stylegan", "--dataset", "toy", "--config",
                 str(_config(tmp_path, model_config={"width": 8, "max_channels": 16,
                                                     "z_dim": 16, "w_dim": 16})),
                 "--steps", "2", "--batch-size", "4", "--resolution", "16",
                 "--run-dir", str(run), "--json"]) == 0
    capsys.readouterr()
    tensors, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert tensors["rng.0.cpu"].dtype == torch.uint8
    assert state["trainer"] == {}  # no ADA unless asked
    suffixes = {p.suffix for p in run.rglob("*") if p.is_file()}
    assert not suffixes & {".pt", ".pth", ".pkl", ".pickle"}


def test_train_crop_flag_trains_on_crops(polychrome_home, tmp_path, capsys):
    make_dataset_dir(polychrome_home, size=40)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model_config": {
        "width": 8, "max_width": 16, "style_dim": 8, "latent_dim": 4, "mapping_dim": 16,
        "mapping_shared_layers": 1, "mapping_head_layers": 1, "e_width": 8, "e_max_width": 16,
        "d_width": 8, "d_max_width": 16}, "checkpoint_every": 0, "sample_every": 0}))
    rc = main(["train", "stargan", "--dataset", "toy", "--config", str(cfg), "--crop", "16",
               "--scale", "16,40", "--steps", "2", "--batch-size", "2",
               "--run-dir", str(tmp_path / "run"), "--json"])
    res = _json_line(capsys.readouterr().out)
    assert rc == 0 and res["steps"] == 2
    model = GANModel.from_pretrained(res["model"]["path"])
    assert model.meta["fit"] == "crops" and model.meta["scale"] == [16, 40]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["fit"] == "crops" and saved["crop"] == 16 and saved["resolution"] == 16
    rc = main(["train", "stargan", "--dataset", "toy", "--crop", "16", "--scale", "8",
               "--json"])
    assert rc != 0 and "LO,HI" in capsys.readouterr().err
