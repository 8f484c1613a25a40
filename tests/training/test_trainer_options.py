"""Typed trainer options: `trainer_options` is checked against what the trainer reads.

A misspelt option (`lambda_pairs: 30`) used to train the default recipe without a word;
noise trainers ignored the mapping altogether."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from polychrome.cli.main import main
from polychrome.errors import ConfigError
from polychrome.models import list_models
from polychrome.training import TrainConfig, load_yaml_config, train
from polychrome.training.trainers import get_trainer_class
from polychrome.training.trainers.cyclegan import CycleGANOptions
from polychrome.training.trainers.noise import NoiseOptions
from polychrome.training.trainers.options import TrainerOptions, options_for_model
from polychrome.training.trainers.stargan import StarGANOptions

from .helpers import make_dataset_dir, make_packed

RECIPES = Path(__file__).resolve().parents[2] / "scripts" / "defaults"
ALLOWED_TYPES = (int, float, str, bool, tuple[float, float])


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_typed_options_class(name):
    from polychrome.models import get_model_class

    trainer = get_trainer_class(get_model_class(name).family).for_model(name)
    cls = trainer.options_class
    assert issubclass(cls, TrainerOptions) and dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        assert f.default is not dataclasses.MISSING, f"{name}: {f.name} has no default"
        assert hints[f.name] in ALLOWED_TYPES, f"{name}: {f.name} is {hints[f.name]}"
        assert isinstance(f.default, typing.get_origin(hints[f.name]) or hints[f.name])
    opts = options_for_model(name, {})
    assert type(opts) is cls and opts == cls()
    with pytest.raises(ConfigError) as info:
        options_for_model(name, {"zzz_not_an_option": 1})
    msg = str(info.value)
    assert msg.startswith(f"{name}") and "'zzz_not_an_option'" in msg
    assert all(k in msg for k in cls.keys())  # the valid keys are listed


def test_noise_trainers_read_no_options_and_say_so():
    assert get_trainer_class("noise").options_class is NoiseOptions
    assert NoiseOptions.keys() == []
    with pytest.raises(ConfigError, match=r"dcgan takes no trainer_options .*got 'lambda_gp'"):
        options_for_model("dcgan", {"lambda_gp": 10})
    # a run-config key put in the wrong place is pointed back to the top level
    with pytest.raises(ConfigError, match=r"n_critic is a run config key: set it at the top"):
        options_for_model("wgan-gp", {"n_critic": 5})


@pytest.mark.parametrize(("model", "given", "words"), [
    ("stargan", {"lambda_pairs": 30}, ["unknown trainer option 'lambda_pairs'",
                                       "did you mean 'lambda_pair'?", "lambda_cyc", "lr_f"]),
    ("cyclegan", {"pool": 10}, ["did you mean 'pool_size'?", "decay_start"]),
    ("pix2pix", {"lambda_L1": 10}, ["did you mean 'lambda_l1'?", "mask_area"]),
    ("stargan", {"lambda_cyc": "2"}, ["trainer_options.lambda_cyc must be a number", "'2'"]),
    ("stargan", {"lambda_cyc": True}, ["lambda_cyc must be a number"]),
    ("stargan", {"ds_decay_steps": 10.5}, ["ds_decay_steps must be a whole number"]),
    ("stargan", {"lambda_ds": float("nan")}, ["lambda_ds must be a finite number"]),
    ("stargan", {"lambda_pair": -1}, ["lambda_pair must be >= 0"]),
    ("cyclegan", {"pool_size": -1}, ["pool_size must be >= 0"]),
    ("cyclegan", {"decay_start": 1.5}, ["decay_start must be in [0, 1]"]),
    ("pix2pix", {"mask_area": [0.3]}, ["mask_area must be a list of 2 numbers"]),
    ("pix2pix", {"mask_area": [0.3, float("inf")]}, ["mask_area must be a finite number"]),
    ("pix2pix", {"degrade": "mlid"}, ["degrade must be one of", "did you mean 'mild'?"]),
])
def test_bad_options_are_refused_clearly(model, given, words):
    with pytest.raises(ConfigError) as info:
        options_for_model(model, given)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{model}")
    for w in words:
        assert w in msg, msg


def test_options_are_typed_and_defaulted():
    opts = options_for_model("stargan", {"lambda_pair": 30, "ds_decay_steps": 100})
    assert isinstance(opts, StarGANOptions)
    assert opts.lambda_pair == 30.0 and isinstance(opts.lambda_pair, float)  # int -> float
    assert opts.ds_decay_steps == 100 and opts.lambda_cyc == StarGANOptions().lambda_cyc
    area = options_for_model("pix2pix", {"mask_area": [0.1, 0.2]}).mask_area
    assert area == (0.1, 0.2) and isinstance(area, tuple)
    assert options_for_model("cyclegan", None) == CycleGANOptions()


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_shipped_recipes_hold_only_valid_options(recipe):
    models = {"emoji-stargan": "stargan", "emoji-stargan-paired": "stargan",
              "photo-styles": "stargan", "emoji-stylegan": "stylegan"}
    cfg = load_yaml_config(recipe)
    options_for_model(cfg.get("model") or models[recipe.stem], cfg.get("trainer_options"))


def test_the_loop_refuses_a_typo_before_reading_data(tmp_path):
    cfg = TrainConfig(model="stargan", dataset="nowhere", resolution=16, steps=1,
                      trainer_options={"lambda_pairs": 30})
    # the dataset does not exist: the options are what the run refuses first
    with pytest.raises(ConfigError, match="did you mean 'lambda_pair'"):
        train(cfg, run_dir=tmp_path / "run", tensorboard=False)
    assert not (tmp_path / "run").exists()
    # and a trainer built by the loop reads the options it was given
    ok = TrainConfig(model="dcgan", model_config={"width": 8}, dataset="toy", resolution=16,
                     steps=1, batch_size=4, checkpoint_every=0, sample_every=0,
                     trainer_options={"lambda_gp": 1})
    with pytest.raises(ConfigError, match="dcgan takes no trainer_options"):
        train(ok, packed=make_packed(n=8), run_dir=tmp_path / "noise", tensorboard=False)


@pytest.mark.parametrize(("model", "options", "words"), [
    ("stargan", {"lambda_pairs": 30}, ["unknown trainer option 'lambda_pairs'",
                                       "did you mean 'lambda_pair'?"]),
    ("dcgan", {"mixing_prob": 0.5}, ["dcgan takes no trainer_options",
                                     "mixing_prob is a run config key"]),
])
def test_cli_train_refuses_a_typo_in_the_config_file(polychrome_home, tmp_path, capsys,
                                                      model, options, words):
    make_dataset_dir(polychrome_home)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"steps": 2, "trainer_options": options}))
    run = tmp_path / "run"
    rc = main(["train", model, "--dataset", "toy", "--config", str(path), "--resolution", "16",
               "--run-dir", str(run), "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), captured.err
    for w in words:
        assert w in err[0], err[0]
    assert not run.exists()
