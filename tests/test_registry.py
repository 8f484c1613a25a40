"""The one name -> object registry, and the registries built on it (models, trainers,
losses, schedules, metrics): an unknown name names the closest known one and all of them."""

from __future__ import annotations

import pytest

from polychrome.errors import ConfigError, ModelError, PolychromeError
from polychrome.registry import Registry, did_you_mean, unknown_name


def test_register_get_and_list():
    reg: Registry[type] = Registry("widget", name_attr="name")

    @reg.register("round")
    class Round:
        pass

    reg.add("square", type("Square", (), {}))
    assert reg.get("round") is Round and Round.name == "round"
    assert reg.names() == ["round", "square"] and list(reg) == ["round", "square"]
    assert "round" in reg and "oval" not in reg and ["unhashable"] not in reg
    assert len(reg) == 2
    assert reg.names(lambda c: c is Round) == ["round"]
    reg.add("round", Round)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("round", type("Other", (), {}))
    with pytest.raises(ValueError, match="non-empty"):
        reg.add("", Round)


def test_unknown_name_says_the_closest_and_lists_all():
    reg: Registry[int] = Registry("widget", error=ModelError, code="no_widget")
    for i, name in enumerate(("hexagon", "octagon", "circle")):
        reg.add(name, i)
    with pytest.raises(ModelError) as info:
        reg.get("hexagn")
    assert info.value.code == "no_widget"
    assert str(info.value) == ("unknown widget 'hexagn' (did you mean 'hexagon'?); "
                               "known widgets: circle, hexagon, octagon")
    with pytest.raises(ModelError) as info:  # nothing close: no guess, still the list
        reg.get("zzz")
    assert "did you mean" not in str(info.value) and "circle, hexagon, octagon" in str(info.value)
    with pytest.raises(ModelError, match="unknown widget"):
        reg.get(["not", "hashable"])  # untyped input (JSON) must not escape as TypeError
    empty: Registry[int] = Registry("gadget")
    with pytest.raises(ConfigError, match=r"known gadgets: \(none\)"):
        empty.get("x")


def test_did_you_mean_helpers():
    assert did_you_mean("lambda_pairs", ["lambda_pair", "lambda_cyc"]) == \
        " (did you mean 'lambda_pair'?)"
    assert did_you_mean("zzz", ["lambda_pair"]) == ""
    assert unknown_name("loss", "hing", ["ns", "hinge"], plural="losses") == \
        "unknown loss 'hing' (did you mean 'hinge'?); known losses: hinge, ns"


def test_models_use_the_registry():
    from polychrome.models import create_model, get_model_class, list_models
    from polychrome.models.registry import MODELS

    assert list_models() == MODELS.names() and "dcgan" in list_models()
    assert list_models("translation") == ["cyclegan", "stargan"]
    assert get_model_class("dcgan").name == "dcgan"
    with pytest.raises(ModelError) as info:
        create_model("dcgna")
    assert info.value.code == "unknown_model"
    assert "did you mean 'dcgan'?" in str(info.value) and "stylegan" in str(info.value)


def test_trainers_use_the_registry():
    from polychrome.training.trainers import get_trainer_class, list_trainers
    from polychrome.training.trainers.base import TRAINERS

    assert list_trainers() == TRAINERS.names() == ["noise", "restoration", "translation"]
    assert get_trainer_class("noise").family == "noise"
    with pytest.raises(ConfigError, match=r"unknown model family 'noize' \(did you mean "
                                          r"'noise'\?\); known families: noise, restoration"):
        get_trainer_class("noize")


def test_translation_trainers_use_the_registry():
    from polychrome.training.trainers.stargan import StarGANTrainer
    from polychrome.training.trainers.translation import BY_MODEL, TranslationTrainer

    assert BY_MODEL.names() == ["cyclegan", "stargan"]
    assert TranslationTrainer.for_model("stargan") is StarGANTrainer
    with pytest.raises(ConfigError, match=r"'stargn' \(did you mean 'stargan'\?\)"):
        TranslationTrainer.for_model("stargn")


def test_losses_schedules_and_metrics_use_the_registry():
    from polychrome.metrics.fidelity import METRICS, parse_metrics
    from polychrome.training.losses import LOSSES, get_losses, hinge_d_loss
    from polychrome.training.schedules import SCHEDULES, CosineSchedule, make_schedule

    assert isinstance(LOSSES, Registry) and get_losses("hinge")[0] is hinge_d_loss
    with pytest.raises(ConfigError, match=r"unknown loss 'hing' \(did you mean 'hinge'\?\)"):
        get_losses("hing")
    assert SCHEDULES.get("cosine") is CosineSchedule and CosineSchedule.kind == "cosine"
    assert make_schedule("cosine", 10).state_dict()["kind"] == "cosine"
    with pytest.raises(ConfigError, match=r"'cosin' \(did you mean 'cosine'\?\); known "
                                          r"schedules: constant, cosine, linear"):
        make_schedule("cosin", 10)
    assert list(METRICS) == ["fid", "kid", "pr"]
    with pytest.raises(PolychromeError, match=r"unknown metric 'fdi' \(did you mean 'fid'\?\)"):
        parse_metrics("kid,fdi")


def test_the_run_config_checks_names_against_the_registries():
    from polychrome.training import TrainConfig

    with pytest.raises(ConfigError, match=r"loss must be one of .*'hinge'.*did you mean 'hinge'"):
        TrainConfig.from_dict({"model": "dcgan", "loss": "hinje"})
    with pytest.raises(ConfigError, match=r"schedule must be .*did you mean 'linear'"):
        TrainConfig.from_dict({"model": "dcgan", "schedule": "lienar"})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): lr_gg \(did you mean "
                                          r"'lr_g'\?\)"):
        TrainConfig.from_dict({"model": "dcgan", "lr_gg": 1e-3})
