"""benchmarks/inference_overhead.py: one tiny round of each measurement, and the committed
JSON. Figures from one tiny round mean nothing: only the script's mechanics are checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import inference_overhead  # noqa: E402

COMMITTED = REPO / "docs" / "quality" / "inference_overhead.json"


@pytest.mark.parametrize("model", sorted(inference_overhead.RESTYLE_MODELS))
def test_pictures_are_distinct(model, tmp_path):
    paths = inference_overhead.make_pictures(model, 14, tmp_path)
    arrays = [np.asarray(Image.open(p)) for p in paths]
    assert len(paths) == 14 and len({a.tobytes() for a in arrays}) == 14
    assert len({a.shape for a in arrays}) == 1  # one size: batches can hold them all


@pytest.mark.slow
def test_one_tiny_round_of_everything():
    result = inference_overhead.measure(n=3, rounds=1, batch=2, gen_n=2,
                                        models=["emoji-stargan"])
    [r] = result["restyle"]
    assert r["pictures"] == 3 and r["batch_size"] == 2 and r["drawn_at"] == "32x32"
    assert r["one_at_a_time_img_per_s"] > 0 and r["batched_img_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["batched_img_per_s"] / r["one_at_a_time_img_per_s"],
                                       rel=0.02)
    assert r["max_uint8_difference"] <= 1  # batched equals one at a time within tolerance
    assert len(r["per_round_ratio"]) == 1
    g = result["generate"]
    assert g["n"] == 2 and all(len(v) == 1 for v in g["per_round_s"].values())
    assert len(g["per_round_ratio"]) == 1
    assert g["cli_wall_s"] > 0 and g["startup_s"] > 0 and g["in_process_sampling_s"] > 0
    assert set(result["goals"]) == {"emoji-stargan: batched restyle >= 10x one at a time",
                                    "generate --n 2: CLI after start-up <= 2x in-process"}


def test_the_committed_figures_record_their_run():
    data = json.loads(COMMITTED.read_text())
    assert data["command"].startswith("python benchmarks/inference_overhead.py")
    assert data["commit"] and data["machine"]["cores"] >= 1
    for r in data["restyle"]:
        assert r["model"] in inference_overhead.RESTYLE_MODELS
        assert r["max_uint8_difference"] <= 1
        goal = data["goals"][f"{r['model']}: batched restyle >= 10x one at a time"]
        assert goal == {"met": r["ratio"] >= 10.0, "value": r["ratio"]}
    g = data["generate"]
    assert g["cli_after_startup_s"] == pytest.approx(g["cli_wall_s"] - g["startup_s"],
                                                     abs=0.002)
    goal = data["goals"][f"generate --n {g['n']}: CLI after start-up <= 2x in-process"]
    assert goal == {"met": g["ratio"] <= 2.0, "value": g["ratio"]}
