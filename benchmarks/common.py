"""What the benchmark scripts share: how they start and how they fail."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from polychrome.errors import PolychromeError


def run_script(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Log to stderr, apply `args.threads` (when set) and run `body(args)`; a
    PolychromeError (a user's mistake: unknown dataset, bad option) is one line, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return body(args)
    except PolychromeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> dict[str, Any]:
    """{"commit": HEAD's sha or None, "dirty": tracked files differ from it}."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None
            else None}


def run_facts() -> dict[str, Any]:
    """What a benchmark's JSON records about its run: command, commit, machine, time."""
    return {
        "command": shlex.join(["python", *sys.argv]),
        **git_commit(),
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform()},
    }


def free_port() -> int:
    """A free TCP port on loopback (for a server a benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
