"""Checkpoint files: round trip, atomicity (partial dirs ignored), pointers, pruning."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from polychrome.errors import CheckpointError
from polychrome.training.checkpoint import (
    BEST_NAME,
    LATEST_NAME,
    STATE_NAME,
    TENSORS_NAME,
    best_checkpoint,
    find_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    save_checkpoint,
)


def _save(root, step, value=0.0, **kw):
    return save_checkpoint(root, step, {"w": torch.full((3,), float(step))},
                           {"note": f"step {step}", "value": value}, **kw)


def test_round_trip(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "b": torch.tensor(7, dtype=torch.int64), "rng": torch.get_rng_state()}
    view = tensors["a"][0]  # shares storage with "a": must still save
    path = save_checkpoint(tmp_path, 12, {**tensors, "view": view}, {"nested": {"x": [1, 2]}})
    assert path.name == "step-000012"
    back, state = load_checkpoint(path)
    for k, v in tensors.items():
        assert torch.equal(back[k], v) and back[k].dtype == v.dtype
    assert torch.equal(back["view"], view)
    assert state["step"] == 12 and state["nested"] == {"x": [1, 2]}
    assert json.loads((tmp_path / LATEST_NAME).read_text()) == {"dir": path.name, "step": 12}
    assert sorted(p.name for p in path.iterdir()) == [STATE_NAME, TENSORS_NAME]


def test_optimizer_state_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.99))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    tensors, meta = optimizer_state(opt, "optim.g")
    path = save_checkpoint(tmp_path, 3, tensors, {"optim": meta})
    tensors, state = load_checkpoint(path)
    meta = state["optim"]
    twin = nn.Linear(4, 3)
    twin.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(twin.parameters(), lr=5.0)
    load_optimizer_state(opt2, "optim.g", tensors, meta)
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.5, 0.99)
    x = torch.randn(5, 4)
    for o, n in ((opt, net), (opt2, twin)):
        o.zero_grad()
        n(x).pow(2).sum().backward()
        o.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_partial_and_scratch_dirs_are_ignored(tmp_path):
    good = _save(tmp_path, 3)
    # a write killed before the rename, and a renamed dir missing a file
    scratch = tmp_path / "step-000004.tmp-abcd"
    scratch.mkdir()
    (scratch / STATE_NAME).write_text("{}")
    broken = tmp_path / "step-000005"
    broken.mkdir()
    (broken / STATE_NAME).write_text(json.dumps({"format": "polychrome-checkpoint"}))
    assert list_checkpoints(tmp_path) == [good]
    assert latest_checkpoint(tmp_path) == good
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(broken)
    _save(tmp_path, 6)
    assert not scratch.exists()  # leftovers are cleaned by the next save


def test_latest_pointer_falls_back_to_a_scan(tmp_path):
    _save(tmp_path, 1)
    two = _save(tmp_path, 2)
    (tmp_path / LATEST_NAME).write_text("{not json")
    assert latest_checkpoint(tmp_path) == two
    # a crash between the rename and the pointer update: the newer complete dir wins
    (tmp_path / LATEST_NAME).write_text(json.dumps({"dir": "step-000001", "step": 1}))
    assert latest_checkpoint(tmp_path) == two
    assert latest_checkpoint(tmp_path / "missing") is None


def test_keep_last_k_plus_best(tmp_path):
    values = {1: 5.0, 2: 1.0, 3: 4.0, 4: float("nan"), 5: 3.0, 6: 2.0}
    for step, v in values.items():
        _save(tmp_path, step, metric=("fid", v), keep_last=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-000002", "step-000005", "step-000006"]
    assert best_checkpoint(tmp_path).name == "step-000002"
    best = json.loads((tmp_path / BEST_NAME).read_text())
    assert best == {"dir": "step-000002", "metric": "fid", "step": 2, "value": 1.0}
    _save(tmp_path, 7, metric=("fid", 0.5), keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000006", "step-000007"]
    assert best_checkpoint(tmp_path).name == "step-000007"


def test_resaving_a_step_replaces_it(tmp_path):
    _save(tmp_path, 4, value=1.0)
    path = _save(tmp_path, 4, value=2.0)
    assert load_checkpoint(path)[1]["value"] == 2.0
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["step-000004"]


def test_find_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        find_checkpoint(run)
    path = _save(run / "checkpoints", 2)
    assert find_checkpoint(run) == path
    assert find_checkpoint(path) == path
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        find_checkpoint(run, "best")


def test_files_are_safetensors_and_json_not_pickle(tmp_path):
    path = _save(tmp_path, 1)
    head = (path / TENSORS_NAME).read_bytes()[:8]
    header_len = int.from_bytes(head, "little")  # safetensors: u64 header size, then JSON
    header = json.loads((path / TENSORS_NAME).read_bytes()[8:8 + header_len])
    assert "w" in header
    json.loads((path / STATE_NAME).read_text())
    assert not any(f.suffix in {".pt", ".pth", ".pkl"} for f in tmp_path.rglob("*"))
    assert os.stat(path / TENSORS_NAME).st_size > 0


def test_a_checkpoint_from_a_newer_format_is_refused_clearly(tmp_path):
    path = _save(tmp_path, 3)
    state = json.loads((path / STATE_NAME).read_text())
    assert state["format_version"] == 1
    for bad in (2, 0, "1", True):
        (path / STATE_NAME).write_text(json.dumps({**state, "format_version": bad}))
        with pytest.raises(CheckpointError, match="format_version"):
            load_checkpoint(path)
    (path / STATE_NAME).write_text(json.dumps({k: v for k, v in state.items()
                                               if k != "format_version"}))
    assert load_checkpoint(path)[1]["step"] == 3  # files from before the field still load
