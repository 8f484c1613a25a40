"""The standard FID network: loaded only from a local weights file, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

from polychrome.cli.main import main
from polychrome.errors import ConfigError
from polychrome.metrics.inception import (
    FEATURE_DIM,
    load_inception,
    random_inception_state_dict,
    read_inception_weights,
)


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download inception weights")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", refuse)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    # torch-fidelity's file is a plain state_dict written by torch.save: make one like it
    path = tmp_path_factory.mktemp("w") / "weights-inception-test.pth"
    torch.save(random_inception_state_dict(seed=0), path)
    return path


def test_features_from_test_made_weights(weights_file: Path, monkeypatch):
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    ext = load_inception(weights_file)
    f = ext.features(images)
    assert ext.name == "inception"
    assert f.shape == (2, FEATURE_DIM) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    # the same network state came through: its weights equal the file's tensors
    state = read_inception_weights(weights_file)
    net_state = ext.net.state_dict()
    assert set(net_state) == set(state)
    assert all(torch.equal(net_state[k], state[k]) for k in state)
    # and the setting is the other way to point at the file
    monkeypatch.setenv("POLYCHROME_INCEPTION_WEIGHTS", str(weights_file))
    via_setting = load_inception().net.state_dict()
    assert all(torch.equal(via_setting[k], state[k]) for k in state)


class NotATensor:
    pass


def test_refuses_missing_unsafe_or_mismatched_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="--inception-weights PATH or set "
                                          "POLYCHROME_INCEPTION_WEIGHTS"):
        load_inception()
    with pytest.raises(ConfigError, match="does not exist"):
        load_inception(tmp_path / "missing.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"x": NotATensor()}, unsafe)  # weights_only loading must refuse the object
    with pytest.raises(ConfigError, match="not a loadable weights file"):
        load_inception(unsafe)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ConfigError, match="do not match"):
        load_inception(wrong)


def test_cli_eval_inception_without_weights_is_a_clear_error(capsys, tmp_path: Path,
                                                            toy_dataset: Path):
    from polychrome.models import create_model

    model_dir = create_model("dcgan", resolution=16, width=8).save_pretrained(tmp_path / "m")
    code = main(["eval", str(model_dir), "--dataset", "toy", "--extractor", "inception"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: no inception weights given") and "--inception-weights" in err
    assert len(err.strip().splitlines()) == 1
