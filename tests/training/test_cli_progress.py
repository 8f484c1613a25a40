"""`polychrome train` as a person runs it, in real processes: a progress bar on a terminal,
time-based log lines off one, and Ctrl-C that checkpoints and registers the model."""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from polychrome.cli.main import main
from polychrome.models import GANModel
from polychrome.persistence.models import show_model
from polychrome.training.checkpoint import latest_checkpoint, load_checkpoint

from .helpers import make_dataset_dir

pytestmark = pytest.mark.slow

STEP_LINE = re.compile(r"step (\d+)/(\d+) \((\d+)%\) ([0-9.]+) img/s ETA (\S+) \| D \S+  G \S+")


def _env() -> dict[str, str]:
    # one OpenMP thread per process (2 shared cores); every Python stream unbuffered
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_cmd(tmp_path: Path, steps: int, **cfg) -> list[str]:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model_config": {"width": 8}, "sample_every": 0,
                                    "sample_every_s": 0, "checkpoint_every": 0, **cfg}))
    return [sys.executable, "-m", "polychrome", "train", "dcgan", "--dataset", "toy",
            "--config", str(path), "--steps", str(steps), "--batch-size", "4",
            "--resolution", "16", "--run-dir", str(tmp_path / "run")]


def test_off_a_terminal_progress_is_time_based_lines_without_a_bar(polychrome_home, tmp_path):
    make_dataset_dir(polychrome_home)
    # log_every beyond the run: every progress line below comes from the clock, not from
    # the step-based metrics log
    proc = subprocess.run(_train_cmd(tmp_path, 12, log_every=1000, progress_every_s=0.001,
                                     sample_every=6),
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout  # no bar redraws in a log
    steps = [int(m.group(1)) for m in STEP_LINE.finditer(proc.stderr)]
    # each step takes far longer than a millisecond: a line after each one, in order
    assert steps == list(range(1, 13)), proc.stderr
    last = STEP_LINE.findall(proc.stderr)[-1]
    assert last[1] == "12" and last[2] == "100" and float(last[3]) > 0 and last[4] == "0:00"
    assert "trained 12/12 steps" in proc.stdout
    grids = re.findall(r"step (\d+): sample grid (\S+)", proc.stderr)
    assert grids == [(str(s), str(tmp_path / "run" / "samples" / f"step-{s:06d}.png"))
                     for s in (0, 6, 12)]


# (rows, columns): a sized terminal, and one that reports no size (some containers)
@pytest.mark.parametrize("winsize", [(40, 160), (0, 0)])
def test_on_a_terminal_a_bar_shows_step_rate_eta_and_losses(polychrome_home, tmp_path,
                                                            winsize):
    import fcntl
    import pty
    import struct
    import termios

    make_dataset_dir(polychrome_home)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *winsize, 0, 0))
    proc = subprocess.Popen(_train_cmd(tmp_path, 400, log_every=1000), stdin=slave,
                            stdout=slave, stderr=slave, env=_env(), close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    frames = [f for f in re.split(r"[\r\n]", text)
              if re.search(r"step \d+/400 .*img/s, ETA \S+, D \S+  G \S+\]", f)]
    assert len(frames) >= 2, text  # redrawn in place as the run goes
    shown = [int(re.search(r"step (\d+)/400", f).group(1)) for f in frames]
    assert shown == sorted(shown) and shown[-1] > shown[0], shown
    assert "%|" in frames[-1]  # the bar itself
    assert re.search(r"trained 400/400 steps", text)
    assert not STEP_LINE.search(text)  # the bar replaces the log lines


@pytest.mark.parametrize("store", ["writable", "blocked"])
def test_ctrl_c_checkpoints_and_registers_the_model(polychrome_home, tmp_path, capsys, store):
    make_dataset_dir(polychrome_home)
    if store == "blocked":  # a file where the model's directory must go: registration fails
        (polychrome_home / "models").mkdir()
        (polychrome_home / "models" / "toy-dcgan").write_text("in the way")
    run = tmp_path / "run"
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(_train_cmd(tmp_path, 100000, log_every=1), env=_env(),
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 300
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count('"losses"') >= 3):
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_path.read_text()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stop requested" in err
    m = re.search(r"stopped (\d+)/100000 steps", out)
    assert m, out
    step = int(m.group(1))
    assert step >= 3
    assert f"continue with: polychrome train --resume {run}" in out
    _, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert state["step"] == step  # the checkpoint at the stop
    if store == "blocked":
        command = f"polychrome models register {run} --name toy-dcgan"
        assert f"register the model with: {command}" in out and "registered as" not in out
        (polychrome_home / "models" / "toy-dcgan").unlink()
        assert main(shlex.split(command)[1:]) == 0  # the printed command, as printed, works
        capsys.readouterr()
    else:
        assert f"model registered as toy-dcgan:1 (step {step}," in out
    info = show_model("toy-dcgan")
    assert [v["version"] for v in info["versions"]] == [1]
    model = GANModel.from_pretrained(info["path"])
    assert model.meta["step"] == step and model.meta["run"] == "run"
