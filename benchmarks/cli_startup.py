"""How long the command line takes to answer before it does any work.

`polychrome --help`, a sub-command's --help and an argument error should come back at
once: they parse the command line and never import torch. Each is timed from process
start to exit (wall clock, median of --runs fresh processes), beside `import torch`
alone, which is what each of them cost before the imports were made lazy.

    python benchmarks/cli_startup.py [--runs 9] [--out docs/quality/cli_startup.json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import run_facts, run_script

from polychrome.utils.atomic import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 0.5  # --help, the bound
CASES = {
    "polychrome --help": ["-m", "polychrome", "--help"],
    "polychrome train --help": ["-m", "polychrome", "train", "--help"],
    "polychrome train dcgan --steps many (exit 2)": ["-m", "polychrome", "train", "dcgan",
                                                    "--steps", "many"],
    "python -c 'import torch' (reference)": ["-c", "import torch"],
}


def time_once(args: list[str]) -> tuple[float, int]:
    """Seconds from starting a fresh interpreter to its exit, and its exit status."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, cwd=REPO, timeout=600)
    return time.perf_counter() - t0, proc.returncode


def measure(runs: int) -> dict:
    """Every case `runs` times, interleaved (a busy moment hits all cases alike)."""
    seconds: dict[str, list[float]] = {name: [] for name in CASES}
    codes: dict[str, set[int]] = {name: set() for name in CASES}
    for args in CASES.values():  # one untimed run each: the OS file cache warms up
        time_once(args)
    for _ in range(runs):
        for name, args in CASES.items():
            s, rc = time_once(args)
            seconds[name].append(s)
            codes[name].add(rc)
    figures = {name: {"median_s": round(statistics.median(v), 4), "min_s": round(min(v), 4),
                      "max_s": round(max(v), 4), "runs": len(v), "exit_codes": sorted(codes[name])}
               for name, v in seconds.items()}
    help_s = figures["polychrome --help"]["median_s"]
    torch_s = figures["python -c 'import torch' (reference)"]["median_s"]
    return {"figures": figures,
            "goals": {"polychrome --help median <= 0.5 s": {"met": help_s <= GOAL_S,
                                                           "value": help_s}},
            "import_torch_over_help": round(torch_s / help_s, 1)}


def main(args: argparse.Namespace) -> int:
    result = {**run_facts(), **measure(args.runs)}
    for name, f in result["figures"].items():
        print(f"{name:48s} median {f['median_s']:.3f} s  (min {f['min_s']:.3f}, "
              f"max {f['max_s']:.3f}, {f['runs']} runs, exit {f['exit_codes']})")
    print(f"import torch alone takes {result['import_torch_over_help']}x as long as --help")
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="Timed runs per case.")
    parser.add_argument("--out", default=str(REPO / "docs" / "quality" / "cli_startup.json"),
                        help="JSON to write ('' for none).")
    sys.exit(run_script(main, parser.parse_args()))
