"""The run config: YAML, overrides, resolution against a model's train_defaults."""

from __future__ import annotations

import pytest
import yaml

from polychrome.errors import ConfigError
from polychrome.models import get_model_class
from polychrome.training.config import (
    DEFAULTED_KEYS,
    TrainConfig,
    dump_yaml,
    load_yaml_config,
    resolve_config,
)


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model: sngan\ndataset: emoji:2\nsteps: 500\nmodel_config: {width: 16}\n"
                    "lr_d: 0.001\neval_metrics: [fid, kid]\n")
    cfg = TrainConfig.from_dict(load_yaml_config(path))
    cfg = cfg.replace(steps=900, seed=None)  # None = "flag not given"
    assert cfg.steps == 900 and cfg.seed == 0 and cfg.model_config == {"width": 16}
    resolved = resolve_config(cfg, get_model_class("sngan").train_defaults)
    defaults = get_model_class("sngan").train_defaults
    assert resolved.lr_d == 0.001  # the config wins over the model
    assert resolved.lr_g == defaults["lr_g"] and resolved.loss == defaults["loss"]
    assert all(getattr(resolved, k) is not None for k in DEFAULTED_KEYS)
    assert resolved.name == "emoji-sngan" and resolved.instance_noise_steps == 900
    again = TrainConfig.from_dict(yaml.safe_load(dump_yaml(resolved)))
    assert again == resolved


@pytest.mark.parametrize("data, needle", [
    ({"model": "dcgan", "lr": 1}, "unknown config key(s): lr"),
    ({"loss": "mse"}, "loss must be one of"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"steps": -5}, "steps must be >= 0"),
    ({"betas": [0.5]}, "betas"),
    ({"keep_last": 0}, "keep_last"),
    ({"amp": "fp8"}, "amp must be one of"),
    ({"model_config": [1, 2]}, "model_config must be a mapping"),
])
def test_bad_configs_raise_config_error(data, needle):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(data)
    assert needle in str(err.value)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_yaml_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml_config(bad)
    assert load_yaml_config(_empty(tmp_path)) == {}


def _empty(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    return p


def test_ada_needs_a_policy():
    cfg = TrainConfig(model="dcgan", dataset="x", ada=True)
    with pytest.raises(ConfigError, match="ada needs"):
        resolve_config(cfg, get_model_class("dcgan").train_defaults)
