"""The command line answers --help and argument errors without loading the heavy stack:
a fresh process, the real entry point, and the list of modules it imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import click
import pytest

from polychrome.cli.main import app

HEAVY = ("torch", "numpy", "PIL", "sqlalchemy", "pydantic", "fastapi")


def _imported(stderr: str) -> set[str]:
    """Top-level packages in a `-X importtime` report."""
    return {m.group(1).split(".")[0]
            for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", stderr, re.M)}


def _polychrome(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "polychrome", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_help_imports_nothing_heavy(args):
    proc = _polychrome(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: polychrome" in proc.stdout
    imported = _imported(proc.stderr)
    assert "polychrome" in imported and "click" in imported  # the report is read right
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_an_argument_error_exits_2_with_one_message_and_no_torch():
    proc = _polychrome("train", "dcgan", "--steps", "many")
    assert proc.returncode == 2
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert "Error: Invalid value for '--steps': 'many' is not a valid integer." in errors
    assert not any("Traceback" in line for line in errors)
    assert "torch" not in _imported(proc.stderr)


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _command_paths(cmd, (*prefix, name))
    return out


def test_every_subcommand_help_and_a_missing_argument_stay_light():
    """Each command's --help, and errors found before any work, in one fresh process."""
    paths = _command_paths(app)
    assert {("train",), ("models", "list"), ("generate",), ("serve",)} <= set(paths)
    calls = [[*p, "--help"] for p in paths] + [["train"], ["train", "dcgan"], ["generate"]]
    script = (
        "import json, sys, contextlib, io\n"
        "from polychrome.cli.main import main\n"
        "codes = []\n"
        f"for argv in {calls!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "        codes.append(main(argv))\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["codes"] == [0] * len(paths) + [2, 2, 2]
    assert result["heavy"] == []
