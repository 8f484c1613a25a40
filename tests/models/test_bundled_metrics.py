"""The figures the bundled models ship: none without its instrument, all from the committed
evaluation (docs/quality/bundled_eval.json, written by scripts/eval_bundled.py)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "src" / "polychrome" / "assets" / "models"
REPORT = REPO / "docs" / "quality" / "bundled_eval.json"
# What every FID on a card stands beside (with its floor and ceiling): the evaluator's
# held-out accuracy and the reference distances it had to clear.
INSTRUMENT_KEYS = ("evaluator_accuracy", "ref_blurred", "ref_noised", "extractor", "dataset",
                   "split")


def _script():
    spec = importlib.util.spec_from_file_location("eval_bundled", REPO / "scripts" /
                                                  "eval_bundled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _groups(metrics: dict) -> list[dict]:
    """The figure groups of a metrics.json: itself and its nested evaluation, if any."""
    return [metrics, *(v for k, v in metrics.items() if k == "evaluation")]


def _has_fid(group: dict) -> bool:
    return any(k == "fid" or k.startswith("fid_per_style") for k in group)


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def report():
    return json.loads(REPORT.read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in ASSETS.iterdir()
                                        if (p / "metrics.json").is_file()))
def test_no_fid_without_its_instrument(name, report):
    metrics = json.loads((ASSETS / name / "metrics.json").read_text())
    assert "at_initialisation" not in metrics  # measured with no instrument beside it
    for group in _groups(metrics):
        if not _has_fid(group):
            continue
        # every FID comes from the committed evaluation, measured with a usable instrument
        assert report["models"].get(name, {}).get("status") == "measured", name
        missing = [k for k in INSTRUMENT_KEYS if k not in group]
        assert not missing, f"{name}: FID without {missing}"
        if "fid" in group:  # a whole-set FID: its floor, ceiling and position
            assert all(math.isfinite(group[k]) and group[k] >= 0
                       for k in ("fid", "fid_floor", "fid_ceiling"))
            assert group["fid_ceiling"] > group["fid_floor"]
            position = (group["fid"] - group["fid_floor"]) / (group["fid_ceiling"]
                                                              - group["fid_floor"])
            assert group["fid_position"] == pytest.approx(position)
        if "fid_per_style" in group:  # per target style: each FID beside its own references
            styles = set(group["fid_per_style"])
            for key in ("fid_floor_per_style", "fid_ceiling_per_style", "fid_position_per_style"):
                assert set(group[key]) == styles, (name, key)
            assert set(group["evaluator_accuracy_per_style"]) >= styles
            assert all(group["fid_ceiling_per_style"][s] > group["fid_floor_per_style"][s]
                       for s in styles)


def test_every_evaluation_records_its_instrument_or_why_not(script, report):
    assert report["models"] and set(report["models"]) <= set(script.MODELS)
    for name, entry in report["models"].items():
        assert entry["status"] in ("measured", "refused", "not_measured"), name
        assert entry["run"]["commit"], name
        if entry["status"] == "measured":
            instrument = entry["result"]["instrument"]
            assert instrument["usable"] and not instrument["problems"], name
            assert not Path(entry["result"]["model"]).is_absolute(), name  # committed JSON
        else:  # why there are no figures is written down
            last = entry["attempts"][-1]
            assert last.get("refused") or last.get("error"), name


def test_metrics_json_is_the_committed_evaluation(script, report):
    for name, entry in report["models"].items():
        metrics = json.loads((ASSETS / name / "metrics.json").read_text())
        # a refused or unmeasured model ships no figure an evaluator would have to back
        assert metrics == script.finite(script.new_metrics(name, entry)), name
        if entry["status"] != "measured":
            assert not any(_has_fid(g) or "style_accuracy" in g or "sample_accuracy" in g
                           for g in _groups(metrics)), name


def test_per_style_figures_are_gathered_by_style(script):
    flat = {"fid": 1.0, "fid[noto]": 2.0, "fid[twemoji]": 3.0, "evaluator_accuracy[noto]": 0.9}
    assert script.per_style_dicts(flat) == {
        "fid": 1.0, "fid_per_style": {"noto": 2.0, "twemoji": 3.0},
        "evaluator_accuracy_per_style": {"noto": 0.9}}
