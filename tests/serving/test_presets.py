"""Presets and the measured time estimate: the answer carries the measured rate and every
preset's ETA, Quick is sized from the measurement to about QUICK_TARGET_S, and a
configuration only a real run can refuse is a clear 400. Probes train tiny configs."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from polychrome.serving import presets
from polychrome.serving.app import create_app

# 16 px, 8 channels, batch 4: a probe step is milliseconds on a quiet machine
TINY = {"model": "dcgan", "dataset": "shapes", "preset": "quick", "resolution": 16,
        "batch_size": 4, "config": {"model_config": {"width": 8, "z_dim": 16}}}


@pytest.fixture
def client(polychrome_home, monkeypatch):
    from polychrome.data.synthetic import make_shapes_dataset
    from polychrome.persistence.datasets import import_dataset

    import_dataset(make_shapes_dataset(polychrome_home / "src", n=4, size=32), "shapes")
    monkeypatch.setattr(presets.ESTIMATOR, "_cache", {})  # each test measures afresh
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def _quick_is_sized(e: dict) -> None:
    """Quick's steps x the measured s/step (plus the one-off costs) is about the target."""
    per_step = e["seconds_per_step"]
    once = e["setup_seconds"] + e["warmup_seconds"]
    ckpts = presets.checkpoint_count(e["job"]) * e["checkpoint_seconds"]
    assert e["estimated_seconds"] == pytest.approx(once + e["steps"] * per_step + ckpts, abs=0.2)
    if e["steps"] > presets.QUICK_MIN_STEPS:
        assert e["estimated_seconds"] <= presets.QUICK_TARGET_S + 0.1
        assert e["estimated_seconds"] > \
            presets.QUICK_TARGET_S - per_step - e["checkpoint_seconds"] - 0.1
    else:  # the floor: a slower machine runs longer than the target, and says so
        assert e["steps"] == presets.QUICK_MIN_STEPS
        assert e["estimated_seconds"] >= presets.QUICK_TARGET_S - 0.1
        assert "below Quick's floor" in e["sizing"]


def test_the_estimate_answers_the_measured_rate_and_every_presets_eta(client):
    r = client.post("/api/presets/estimate", json=TINY)
    assert r.status_code == 200, r.text
    e = r.json()
    for k in ("seconds_per_step", "cpu_seconds_per_step", "images_per_second",
              "setup_seconds", "warmup_seconds", "checkpoint_seconds", "estimated_seconds"):
        assert isinstance(e[k], int | float) and math.isfinite(e[k]) and e[k] >= 0, k
    assert e["seconds_per_step"] > 0 and e["images_per_step"] == 4  # dcgan: one batch a step
    assert e["images_per_second"] == pytest.approx(4 / e["seconds_per_step"], rel=0.01)
    assert e["warmup_steps"] == presets.PROBE_WARMUP_STEPS
    assert presets.PROBE_MIN_TIMED <= e["steps_timed"] <= presets.PROBE_MAX_TIMED
    assert e["threads"] >= 1 and e["r1_period"] == 1  # dcgan: no lazy R1
    assert e["resolution"] == 16 and e["batch_size"] == 4 and e["fit"] == "crop"
    for words in ("measured", "s/step", "img/s", "thread", "warm-up", "steps: 5 minutes"):
        assert words in e["basis"], words
    # Quick was sized from the measurement, and the job to submit says the same
    _quick_is_sized(e)
    assert e["job"]["steps"] == e["steps"]
    assert e["job"]["config"]["sample_every"] == max(1, e["steps"] // 10)
    rows = {p["name"]: p for p in e["presets"]}
    assert list(rows) == list(presets.PRESETS)
    assert rows["quick"]["steps"] == e["steps"]
    assert rows["quick"]["estimated_seconds"] == e["estimated_seconds"]
    # Standard and Quality keep their steps and report their own measured ETA
    for name in ("standard", "quality"):
        row = rows[name]
        assert row["steps"] == presets.PRESETS[name].steps
        assert row["sizing"] == "the preset's steps"
        assert row["seconds_per_step"] > 0
        assert row["estimated_seconds"] > row["steps"] * row["seconds_per_step"]
    # a step count the client gives is kept, not sized
    r = client.post("/api/presets/estimate", json={**TINY, "steps": 7})
    assert r.status_code == 200, r.text
    assert r.json()["steps"] == 7 and r.json()["sizing"] == "steps as asked"


def test_a_slower_machine_gets_fewer_quick_steps(client, monkeypatch):
    measured: list = []
    real = presets.ESTIMATOR._run_probe

    def probe_once(settings, cfgs):  # one real measurement; then the same machine 4x slower
        if not measured:
            measured.extend(real(settings, cfgs))
            return measured
        return [{**m, "seconds_per_step": 4 * m["seconds_per_step"]} for m in measured]

    monkeypatch.setattr(presets.ESTIMATOR, "_run_probe", probe_once)
    fast = client.post("/api/presets/estimate", json=TINY).json()
    presets.ESTIMATOR._cache.clear()
    slow = client.post("/api/presets/estimate", json=TINY).json()
    assert slow["seconds_per_step"] == pytest.approx(4 * fast["seconds_per_step"], rel=1e-3)
    _quick_is_sized(fast)
    _quick_is_sized(slow)
    if fast["steps"] > presets.QUICK_MIN_STEPS:
        assert presets.QUICK_MIN_STEPS <= slow["steps"] < fast["steps"]
    else:
        assert slow["steps"] == fast["steps"] == presets.QUICK_MIN_STEPS
    # Standard's steps do not move; its ETA does
    rows = [{p["name"]: p for p in e["presets"]}["standard"] for e in (fast, slow)]
    assert rows[0]["steps"] == rows[1]["steps"]
    assert rows[1]["estimated_seconds"] > rows[0]["estimated_seconds"]


def test_a_config_the_probe_cannot_run_is_a_clear_400(client):
    """Only training finds that 16 pictures make no batch of 64: a 400 that says so."""
    r = client.post("/api/presets/estimate", json={**TINY, "batch_size": 64})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "config_error"
    assert "no full batch of 64" in err["message"] and "batch_size" in err["message"]


def test_size_steps_floor_and_cap():
    """The sizing rule itself: the target at the rate, the floor, the server's cap."""
    quick = presets.PRESETS["quick"]

    def job(n):
        return presets.preset_job("dcgan", "quick", steps=n)

    rate = {"seconds_per_step": 0.5, "setup_seconds": 10.0, "warmup_seconds": 2.0,
            "checkpoint_seconds": 1.0}
    steps, how = presets.size_steps(quick, rate, job, 10**7)
    assert presets.eta_seconds(rate, job(steps)) <= quick.target_seconds
    assert presets.eta_seconds(rate, job(steps + 1)) > quick.target_seconds - 1.0
    assert f"= {steps:,} steps" in how
    steps, how = presets.size_steps(quick, {**rate, "seconds_per_step": 50.0}, job, 10**7)
    assert steps == presets.QUICK_MIN_STEPS and "below Quick's floor" in how
    steps, how = presets.size_steps(quick, rate, job, 100)
    assert steps == 100 and "train_max_steps" in how
