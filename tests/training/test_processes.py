"""Real processes: a run killed with SIGKILL resumes; a 2-process torchrun run (gloo, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from polychrome.cli.main import main
from polychrome.models import GANModel
from polychrome.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

from .helpers import make_dataset_dir

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    # one OpenMP thread per process: 2 shared cores, several processes
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(tmp_path: Path, **extra) -> Path:
    cfg = {"model_config": {"width": 8}, "log_every": 1, "sample_every": 0, **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_completes(polychrome_home, tmp_path,
                                                                   capsys):
    make_dataset_dir(polychrome_home)
    run = tmp_path / "run"
    log_path = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "polychrome", "train", "dcgan", "--dataset", "toy",
           "--config", str(_config(tmp_path, checkpoint_every=1, keep_last=2)),
           "--steps", "100000", "--batch-size", "8", "--resolution", "16",
           "--run-dir", str(run), "--json"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=_env())
    try:
        deadline = time.monotonic() + 180
        while not list_checkpoints(run / "checkpoints"):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.3)  # let it get busy writing further checkpoints, then kill mid-flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    latest = latest_checkpoint(run / "checkpoints")
    tensors, state = load_checkpoint(latest)
    step = state["step"]
    assert step >= 1 and "model.generator.net.0.weight" in tensors
    rc = main(["train", "--resume", str(run), "--steps", str(step + 2), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    assert result["steps"] == step + 2 and result["model"] is not None
    assert load_checkpoint(latest_checkpoint(run / "checkpoints"))[1]["step"] == step + 2
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert not leftovers
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
    assert steps == sorted(set(steps))  # lines logged after the checkpoint were dropped


def test_torchrun_two_cpu_processes(polychrome_home, tmp_path):
    make_dataset_dir(polychrome_home)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "polychrome", "train", "dcgan", "--dataset", "toy",
           "--config", str(_config(tmp_path, checkpoint_every=2, sample_every=2)),
           "--steps", "4", "--batch-size", "4", "--resolution", "16",
           "--run-dir", str(run), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # only rank 0 prints
    result = json.loads(lines[0])
    assert result["steps"] == 4 and result["model"]["name"] == "toy-dcgan"
    assert "rank 1/2" in proc.stderr

    ckpts = list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step-000002", "step-000004"]
    tensors, state = load_checkpoint(ckpts[-1])
    assert state["run"]["world_size"] == 2
    sums = state["run"]["param_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # averaged grads keep the ranks identical
    assert not (tensors["rng.0.cpu"] == tensors["rng.1.cpu"]).all()  # own seed per rank
    assert not (tensors["rng.0.noise"] == tensors["rng.1.noise"]).all()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in logged if "losses" in r] == [1, 2, 3, 4]  # written once
    assert len(list((run / "events").glob("events.out.tfevents.*"))) == 1
    model = GANModel.from_pretrained(result["model"]["path"])
    assert model.meta["styles"] == ["ink", "neon"]
