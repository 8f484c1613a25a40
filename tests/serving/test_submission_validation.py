"""A train job is checked whole before its row exists: a refused submission is a 4xx in
the API's error shape and leaves no job row and no queue message behind (a client that
retries a 500 would otherwise queue duplicates that fail later on a worker)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from polychrome.persistence import jobs as store
from polychrome.serving.app import create_app
from polychrome.serving.jobs.queue import get_huey

TINY = {"kind": "train", "model": "dcgan", "dataset": "shapes", "steps": 5, "resolution": 16,
        "batch_size": 4, "config": {"model_config": {"width": 8, "z_dim": 16}}}


@pytest.fixture
def client(polychrome_home):
    from polychrome.data.synthetic import make_shapes_dataset
    from polychrome.persistence.datasets import import_dataset

    import_dataset(make_shapes_dataset(polychrome_home / "src", n=4, size=32), "shapes")
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def _jobs() -> tuple[int, int]:
    return sum(store.count_by_state().values()), get_huey().pending_count()


def _refused(client, body: dict | str, *words: str, status: int = 400) -> dict:
    before = _jobs()
    raw = body if isinstance(body, str) else json.dumps(body)
    r = client.post("/api/jobs", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["code"] != "internal_error", err
    for w in words:
        assert w in err["message"], err
    assert _jobs() == before, "a refused submission left a job row or a queue message"
    return err


def _with(config: dict | None = None, **top) -> dict:
    body = json.loads(json.dumps(TINY))
    body.update(top)
    for k, v in (config or {}).items():
        if k == "model_config":
            body["config"]["model_config"].update(v)
        else:
            body["config"][k] = v
    return body


def test_a_valid_tiny_job_is_queued(client):
    before = _jobs()
    r = client.post("/api/jobs", json=TINY)
    assert r.status_code == 202, r.text
    assert _jobs() == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_anywhere_are_refused_before_a_row_exists(client, literal):
    # Python's json (and so the API's body parser) accepts these literals.
    def raw(body: dict, marker: float) -> str:
        return json.dumps(body).replace(repr(marker), literal)

    _refused(client, raw(_with({"lr_g": 0.000123}), 0.000123), "lr_g", "finite")
    _refused(client, raw(_with({"trainer_options": {"w": [1.0, 2.5]}}), 2.5),
             "trainer_options", "finite")
    _refused(client, raw(_with({"model_config": {"width": 8.25}}), 8.25), "width")
    _refused(client, raw({**TINY, "seed": 12.5}, 12.5), status=422)  # an int field


@pytest.mark.parametrize(("config", "top", "words"), [
    ({}, {"resolution": 48}, ["power of two"]),
    ({"model_config": {"widht": 8}}, {}, ["widht"]),
    ({"model_config": {"width": 10**6, "max_channels": 10**6}}, {},
     ["parameters", "max_model_params"]),
    ({"model_config": {"z_dim": 10**9}}, {}, ["parameters", "max_model_params"]),
    ({"model_config": {"num_domains": 3}}, {}, ["num_domains"]),  # shapes has 4 styles
    ({"eval_n": 10**12}, {}, ["eval_n"]),
    ({"sample_cols": 10**6}, {}, ["sample_cols"]),
    ({"sample_cols": 0}, {}, ["sample_cols"]),
    ({"steps": 10**12}, {"steps": None}, ["steps"]),
    ({"batch_size": 10**7}, {"batch_size": None}, ["batch_size"]),
    ({"crop": 100_000}, {"resolution": None}, ["crop"]),
    ({"device": "gpu0"}, {}, ["device"]),
    ({"device": "cuda:x"}, {}, ["device"]),
    ({"log_every": "often"}, {}, ["log_every"]),
    ({"betas": "ab"}, {}, ["betas"]),
    ({"lr_g": -1}, {}, ["lr_g"]),
    ({"ema_decay": True}, {}, ["ema_decay"]),
    ({"eval_metrics": "fid"}, {}, ["eval_metrics"]),
    ({"crop": 16}, {"resolution": None}, ["crops"]),  # dcgan draws whole pictures
])
def test_configs_that_would_fail_on_the_worker_are_refused_now(client, config, top, words):
    body = _with(config, **top)
    for k in [k for k, v in top.items() if v is None]:
        del body[k]
    _refused(client, body, *words)


def test_a_gpu_index_beyond_the_api_machines_gpus_is_refused(client, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _refused(client, _with({"device": "cuda:99"}), "cuda:99", "1 GPU")
    assert client.post("/api/jobs", json=_with({"device": "cuda:0"})).status_code == 202


def test_cuda_forms_pass_when_the_api_machine_has_no_gpu(client, monkeypatch):
    """The worker may run on another machine: without CUDA here only the form is checked
    (the worker refuses a device it lacks with a clear message)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("auto", "cpu", "cuda", "cuda:3"):
        assert client.post("/api/jobs", json=_with({"device": device})).status_code == 202


def test_the_limits_are_settings(client, monkeypatch):
    monkeypatch.setenv("POLYCHROME_MAX_MODEL_PARAMS", "1000")
    monkeypatch.setenv("POLYCHROME_TRAIN_MAX_RESOLUTION", "8")
    with TestClient(create_app(), raise_server_exceptions=False) as small:
        _refused(small, TINY, "16", "train_max_resolution")
        _refused(small, {**TINY, "resolution": 8}, "1,000", "max_model_params")


def test_the_estimate_route_checks_the_same_way(client):
    before = _jobs()
    r = client.post("/api/presets/estimate", json={
        "model": "dcgan", "dataset": "shapes",
        "config": {"model_config": {"width": 10**6, "max_channels": 10**6}}})
    assert r.status_code == 400 and "max_model_params" in r.json()["error"]["message"], r.text
    r = client.post("/api/presets/estimate", json={
        "model": "dcgan", "dataset": "shapes", "config": {"eval_n": 10**12}})
    assert r.status_code == 400 and "eval_n" in r.json()["error"]["message"], r.text
    assert _jobs() == before


@pytest.mark.parametrize(("model", "bad", "good", "words"), [
    ("stargan", {"trainer_options": {"lambda_pairs": 30}},
     {"trainer_options": {"lambda_pair": 30}},
     ["unknown trainer option 'lambda_pairs'", "did you mean 'lambda_pair'?", "lambda_cyc"]),
    ("dcgan", {"trainer_options": {"gp_weight": 10}}, {"gp_weight": 10},
     ["dcgan takes no trainer_options", "gp_weight is a run config key"]),
    ("stargan", {"trainer_options": {"lambda_cyc": "high"}},
     {"trainer_options": {"lambda_cyc": 2}}, ["lambda_cyc must be a number"]),
])
def test_trainer_options_are_checked_at_submission(client, model, bad, good, words):
    """A misspelt or mistyped trainer option is a 400 before a job row exists (it used to
    train the default recipe without a word); the corrected request is queued."""
    mc = {"width": 8, "z_dim": 16} if model == "dcgan" else {"width": 8, "max_width": 16}
    body = {**TINY, "model": model, "config": {"model_config": mc, **bad}}
    err = _refused(client, body, *words)
    assert err["code"] == "config_error"
    r = client.post("/api/jobs", json={**body, "config": {"model_config": mc, **good}})
    assert r.status_code == 202, r.text
    # the estimate route runs the same check
    r = client.post("/api/presets/estimate", json={"model": model, "dataset": "shapes",
                                                   "config": body["config"]})
    assert r.status_code == 400 and words[0] in r.json()["error"]["message"], r.text
