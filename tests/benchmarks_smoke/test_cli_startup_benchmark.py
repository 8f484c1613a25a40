"""benchmarks/cli_startup.py: one short round of its measurement, and the committed JSON.
Figures from one round mean nothing here: only the script's mechanics are checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import cli_startup  # noqa: E402

COMMITTED = REPO / "docs" / "quality" / "cli_startup.json"


@pytest.mark.slow
def test_one_round_times_every_case_with_its_exit_status():
    result = cli_startup.measure(1)
    figures = result["figures"]
    assert set(figures) == set(cli_startup.CASES)
    assert figures["polychrome --help"]["exit_codes"] == [0]
    assert figures["polychrome train --help"]["exit_codes"] == [0]
    assert figures["polychrome train dcgan --steps many (exit 2)"]["exit_codes"] == [2]
    assert all(f["runs"] == 1 and 0 < f["min_s"] <= f["median_s"] <= f["max_s"]
               for f in figures.values())
    goal = result["goals"]["polychrome --help median <= 0.5 s"]
    assert goal["value"] == figures["polychrome --help"]["median_s"]
    assert goal["met"] == (goal["value"] <= 0.5)


def test_the_committed_figures_record_their_run():
    data = json.loads(COMMITTED.read_text())
    assert data["command"].startswith("python benchmarks/cli_startup.py")
    assert data["commit"] and data["dirty"] is False and data["machine"]["cores"] >= 1
    assert set(data["figures"]) == set(cli_startup.CASES)
    help_s = data["figures"]["polychrome --help"]["median_s"]
    assert data["goals"]["polychrome --help median <= 0.5 s"] == {"met": help_s <= 0.5,
                                                                  "value": help_s}
