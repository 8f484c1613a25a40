"""benchmarks/train_throughput.py: the baseline comparison runs end to end on the smallest
model (a baseline exported from this checkout's own HEAD), writes its record, leaves no
temporary tree behind, and refuses a bad --baseline in one line. Figures from these short
runs mean nothing: only the script's mechanics are checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import train_throughput  # noqa: E402

FAST = ["--models", "mlp-gan", "--seconds", "0", "--warmup", "0", "--rounds", "1",
        "--generate-seconds", "0", "--matmul-size", "64", "--threads", "1"]


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                          cwd=REPO, capture_output=True)
    return done.returncode == 0


needs_git = pytest.mark.skipif(not _in_git_checkout(), reason="needs a git checkout")


def test_restoration_models_run_at_a_resolution_their_config_accepts():
    # pix2pix at 32 px would feed an 8 px input to 3 stride-2 layers: its default instead
    assert train_throughput.resolution_for("pix2pix", 32) == 64
    assert train_throughput.resolution_for("dcgan", 32) == 32


@needs_git
def test_baseline_and_new_in_one_run(tmp_path, monkeypatch, capsys):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "record.json"
    assert train_throughput.main([*FAST, "--baseline", "HEAD", "--json", str(out)]) == 0
    # the exported tree and the run dirs are gone (torch may keep caches of its own there)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("train-throughput")] == []
    table = capsys.readouterr().out
    assert "| mlp-gan | noise | 32 | baseline |" in table
    assert "| mlp-gan | noise | 32 | new |" in table
    record = json.loads(out.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    assert record["baseline"] == {"ref": "HEAD", "commit": head}
    assert {"commit", "machine", "command"} <= set(record)
    (entry,) = record["models"]
    assert entry["model"] == "mlp-gan" and entry["resolution"] == 32
    for side in ("baseline", "new"):
        row = entry[side]
        assert "error" not in row, row
        assert row["threads"] == 1 and row["steps"] >= 2 and row["gflop_s"] > 0
        assert len(entry[f"{side}_rounds"]) == 1
        assert "package_dir" not in row  # no machine paths in the record
    assert entry["gflop_s_ratio"] == pytest.approx(entry["new"]["gflop_s"]
                                                   / entry["baseline"]["gflop_s"])
    # one round per side: its median is that round
    assert entry["gflop_s_ratio_median"] == pytest.approx(entry["gflop_s_ratio"])
    assert str(tmp_path) not in out.read_text().replace(str(out), "")


def test_current_tree_alone(capsys):
    assert train_throughput.main([*FAST, "--baseline", ""]) == 0
    table = capsys.readouterr().out
    assert "| mlp-gan | noise | 32 | new |" in table and "| baseline |" not in table


@needs_git
def test_a_bad_baseline_is_one_line(capsys):
    assert train_throughput.main([*FAST, "--baseline", "no-such-ref-xyz"]) == 2
    err = capsys.readouterr().err
    assert "error: --baseline 'no-such-ref-xyz' is not a commit" in err
    assert "Traceback" not in err
