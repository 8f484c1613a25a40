"""benchmarks/contract.py: the dropped refusals it counts, and (slow) one short run against a
real server with the bundled models. A short run's counts mean nothing: only the script's
mechanics and its record are checked; README's sentence is checked against the committed
record by tests/test_docs_consistency.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import contract  # noqa: E402


def test_dropped_refusals_are_counted_by_check_status_and_code(tmp_path):
    path = tmp_path / "dropped.jsonl"
    rows = [{"operation": "POST /api/restyle", "check": "positive_data_acceptance",
             "status": 422, "code": "corrupt"}] * 3 + [
            {"operation": "POST /api/jobs", "check": "positive_data_acceptance",
             "status": 400, "code": "bad_webhook"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = contract.dropped_counts(path)
    assert got["total"] == 4
    assert got["by_check_status_code"] == [
        {"check": "positive_data_acceptance", "status": 422, "code": "corrupt", "count": 3},
        {"check": "positive_data_acceptance", "status": 400, "code": "bad_webhook", "count": 1}]
    assert contract.dropped_counts(tmp_path / "none.jsonl") == {"total": 0,
                                                                 "by_check_status_code": []}


def test_the_committed_record_says_what_ran():
    r = json.loads((REPO / "docs" / "quality" / "schemathesis.json").read_text())
    assert r["command"].startswith("python ") and "contract.py" in r["command"]
    assert r["commit"] and r["machine"]["cores"]
    assert r["summary"]["test_cases"]["generated"] > 0
    assert r["seconds"] >= 60 and r["server"]["alive_after"] is True
    assert sorted(r["server"]["models"]) == sorted(
        p.name for p in (REPO / "src" / "polychrome" / "assets" / "models").iterdir()
        if p.is_dir())


@pytest.mark.slow
def test_a_short_run_writes_its_record(tmp_path):
    out = tmp_path / "contract.json"
    code = contract.main(["--seconds", "5", "--json", str(out)])
    r = json.loads(out.read_text())
    assert code == r["exit_code"] == 0, r["summary"]
    assert r["server"]["alive_after"] and r["server"]["models"]
    assert r["summary"]["test_cases"]["generated"] > 0
    assert r["summary"]["test_cases"]["unique_failures"] == 0
