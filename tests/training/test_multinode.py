"""Several machines: two torchrun "nodes" on loopback (c10d rendezvous) train one run, and
the cross-rank weight check really compares the ranks' tensors (and fails when they differ).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from polychrome.errors import TrainingError
from polychrome.training.checkpoint import list_checkpoints, load_checkpoint
from polychrome.training.distributed import (
    DistEnv,
    RanksDiverged,
    check_ranks_agree,
    tensor_fingerprint,
)

from .helpers import make_dataset_dir

ROOT = Path(__file__).resolve().parents[2]

# Runs `polychrome ...` exactly as `python -m polychrome` would, with one addition for the
# test: every rank saves the tensors it hands to the weight check, so the test can compare
# both ranks' parameters itself instead of trusting the check's verdict.
DRIVER = textwrap.dedent("""
    import os, runpy, sys
    from safetensors.torch import save_file
    import polychrome.training.distributed as ddp

    real_check = ddp.check_ranks_agree

    def recording_check(named, env, *, step):
        named = list(named)
        tensors = {n: t.detach().cpu().contiguous().clone() for n, t in named}
        save_file(tensors, os.path.join(os.environ["PARAMS_OUT"],
                                        f"rank{env.rank}-step{step}.safetensors"))
        return real_check(named, env, step=step)

    ddp.check_ranks_agree = recording_check
    sys.argv = ["polychrome", *sys.argv[1:]]
    runpy.run_module("polychrome", run_name="__main__", alter_sys=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    # one OpenMP thread per process: 2 shared cores, four processes
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def test_fingerprint_sees_every_bit_and_ignores_layout(monkeypatch):
    import polychrome.training.distributed as ddp

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 7, 7, generator=g)
    assert torch.equal(tensor_fingerprint(a), tensor_fingerprint(a.clone()))
    # the same values in channels_last memory: compared by value, not by layout
    assert torch.equal(tensor_fingerprint(a), tensor_fingerprint(
        a.to(memory_format=torch.channels_last)))
    b = a.clone()
    b[2, 4, 6, 6] = torch.nextafter(b[2, 4, 6, 6], torch.tensor(1e9))  # one ulp
    assert not torch.equal(tensor_fingerprint(a), tensor_fingerprint(b))
    c = a.clone().reshape(-1)
    c[[0, 1]] = c[[1, 0]]  # the same bytes in another order
    assert not torch.equal(tensor_fingerprint(a), tensor_fingerprint(c.reshape(a.shape)))
    assert tensor_fingerprint(torch.tensor(1.5)).shape == (2,)  # 0-dim tensors too
    # chunked: a tensor spanning many chunks gives the same numbers as one chunk
    whole = tensor_fingerprint(a)
    monkeypatch.setattr(ddp, "_FP_CHUNK", 64)
    assert torch.equal(tensor_fingerprint(a), whole)
    # one process: nothing to compare, nothing collective
    rec = check_ranks_agree([("w", a)], DistEnv(), step=3)
    assert rec["agree"] and rec["world_size"] == 1 and rec["tensors"] == 1


def _agreement_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank of a 2-process gloo group: an agreeing check, then one with a perturbed rank."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)  # the same weights on both ranks
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        env = DistEnv(rank, world, 0, torch.device("cpu"), "gloo", node=rank)
        out: dict = {"agree": check_ranks_agree(net.named_parameters(), env, step=5)}
        if rank == 1:
            with torch.no_grad():  # one ulp on one weight of one rank
                w = net[2].weight
                w[1, 3] = torch.nextafter(w[1, 3], torch.tensor(1e9))
        try:
            check_ranks_agree(net.named_parameters(), env, step=6)
            out["diverged"] = None
        except RanksDiverged as e:
            out["diverged"] = {"message": str(e), "code": e.code, "record": e.record,
                               "is_training_error": isinstance(e, TrainingError)}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_weight_check_fails_when_one_rank_differs(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.syspath_prepend(str(ROOT))  # spawned children import this module by name
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    mp.spawn(_agreement_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for res in results:
        agree = res["agree"]
        assert agree["agree"] is True and agree["world_size"] == 2 and agree["nodes"] == 2
        assert agree["tensors"] == 4 and agree["step"] == 5
        fps = [r["fingerprint"] for r in agree["ranks"]]
        assert fps[0] == fps[1]
        bad = res["diverged"]
        assert bad is not None, "a one-ulp difference went unnoticed"
        assert bad["code"] == "ranks_diverged" and bad["is_training_error"]
        assert bad["record"]["agree"] is False and bad["record"]["differing"] == ["2.weight"]
        assert "step 6" in bad["message"] and "rank(s) [1]" in bad["message"]
        assert "2.weight" in bad["message"]
        gaps = bad["record"]["max_abs_diff"]["2.weight"]
        assert gaps[0] == 0.0 and 0.0 < gaps[1] < 1e-6
        fps = [r["fingerprint"] for r in bad["record"]["ranks"]]
        assert fps[0] != fps[1]
    assert results[0]["diverged"]["message"] == results[1]["diverged"]["message"]


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_train_one_run(polychrome_home, tmp_path):
    make_dataset_dir(polychrome_home)
    run = tmp_path / "run"
    params = tmp_path / "params"
    params.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model_config": {"width": 8}, "log_every": 1,
                                   "sample_every": 0, "checkpoint_every": 2}))
    endpoint = f"127.0.0.1:{_free_port()}"
    rdzv_id = uuid.uuid4().hex[:12]
    train_args = ["train", "dcgan", "--dataset", "toy", "--config", str(cfg), "--steps", "4",
                  "--batch-size", "4", "--resolution", "16", "--run-dir", str(run), "--json"]

    def node(is_host: bool) -> list[str]:
        # The README's two-machine command, with loopback for both machines' addresses;
        # is_host says which one serves the rendezvous (on real machines: the endpoint's).
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
                "--rdzv_id", rdzv_id, "--rdzv_conf", f"is_host={int(is_host)}",
                "--local_addr", "127.0.0.1", str(driver), *train_args]

    env = _env(PARAMS_OUT=str(params))
    procs = [subprocess.Popen(node(host), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for host in (True, False)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    stderr = "".join(err for _, err in outs)
    assert "node 0, local rank 0" in stderr and "node 1, local rank 0" in stderr

    # Only global rank 0 (on whichever node the rendezvous made node 0) prints and writes.
    lines = [ln for out, _ in outs for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, outs
    result = json.loads(lines[0])
    assert result["steps"] == 4 and result["model"]["name"] == "toy-dcgan"

    # Both ranks' parameters, saved by each rank at each check: equal tensor for tensor.
    for step in (2, 4):
        r0 = load_file(params / f"rank0-step{step}.safetensors")
        r1 = load_file(params / f"rank1-step{step}.safetensors")
        assert r0.keys() == r1.keys() and any(k.startswith("ema.") for k in r0)
        unequal = [k for k in r0 if not torch.equal(r0[k], r1[k])]
        assert not unequal, f"ranks differ at step {step}: {unequal}"
    before = load_file(params / "rank0-step2.safetensors")
    after = load_file(params / "rank0-step4.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it did train

    # The check's record: two nodes, one process each, agreeing at the last step.
    ranks = json.loads((run / "ranks.json").read_text())
    assert ranks["agree"] is True and ranks["step"] == 4
    assert ranks["world_size"] == 2 and ranks["nodes"] == 2
    assert sorted((r["node"], r["local_rank"]) for r in ranks["ranks"]) == [(0, 0), (1, 0)]
    assert ranks["ranks"][0]["fingerprint"] == ranks["ranks"][1]["fingerprint"]

    ckpts = list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step-000002", "step-000004"]
    tensors, state = load_checkpoint(ckpts[-1])
    assert state["run"]["world_size"] == 2
    assert not (tensors["rng.0.noise"] == tensors["rng.1.noise"]).all()  # seeded per rank
    logged = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in logged if "losses" in r] == [1, 2, 3, 4]  # written once
