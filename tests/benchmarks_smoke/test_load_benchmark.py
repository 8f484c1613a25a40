"""benchmarks/load.py: its figures, README's block (tests/test_docs_consistency.py checks
README against the committed JSON), and (slow) one short run end to end against a real
server with a tiny bound. Figures from the short run mean nothing: only the script's
mechanics and outputs are checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import load  # noqa: E402


def _run(clients: int, seconds: float, n_ok: int, n_shed: int = 0,
         lost: dict[str, int] | None = None) -> dict:
    records = [(200, 0.01 * (1 + i % 10), "") for i in range(n_ok)]
    records += [(503, 0.002, "") for _ in range(n_shed)]
    for kind, n in (lost or {}).items():
        records += [(0, 1.0, kind)] * n
    return {"clients": clients, "elapsed_s": seconds, "records": records,
            "health": [0.001 * (1 + i % 5) for i in range(100)],
            "ready": [(200, False)] * 3 + [(503, True)] * (2 if n_shed else 0),
            "cpu_s": {"server": 0.8 * seconds, "load generator": 0.1 * seconds}}


def test_summary_and_tables():
    one = load.summarise(_run(1, 10.0, 500))
    assert one["throughput_rps"] == 50.0 and one["by_status"] == {"200": 500}
    assert one["no_answer"] == {} and one["shed_p99_ms"] is None
    assert 10 <= one["p50_ms"] <= 100 and one["p99_ms"] == 100.0 and one["max_ms"] == 100.0
    assert one["health_p99_ms"] == 5.0 and one["cpu_cores"] == {"server": 0.8,
                                                                 "load generator": 0.1}
    mid = load.summarise([_run(32, 10.0, 1500), _run(32, 10.0, 1700)])  # two rounds
    assert mid["rounds_rps"] == [150.0, 170.0] and mid["throughput_rps"] == 160.0
    assert mid["requests"] == 3200 and mid["seconds"] == 20.0 and mid["health_probes"] == 200
    assert mid["cpu_cores"] == {"server": 0.8, "load generator": 0.1}
    top = load.summarise(_run(256, 10.0, 1500, n_shed=4000, lost={"reset": 2}))
    assert top["by_status"] == {"200": 1500, "503": 4000} and top["no_answer"] == {"reset": 2}
    assert top["requests"] == 5502 and top["answers_rps"] == 550.0
    assert top["shed_p99_ms"] == 2.0 and top["ready_saturated"] == 2
    report = {"commit": "abc123", "machine": {"cores": 2, "cpu": "Test CPU"},
              "server": {"max_inflight": 8, "max_waiting": 24, "batching": True,
                         "inference_threads": 1},
              "load": {"seconds": 10.0, "model": "m", "rounds": 2},
              "runs": [one, mid, top]}
    report["ratios"] = load.ratios(report)
    assert report["ratios"] == {"throughput_mid_over_one": 3.2, "p99_top_over_mid": 1.0}
    text = load.readme_table(report)
    assert text.startswith(load.README_BEGIN) and text.endswith(load.README_END)
    rows = [line for line in text.splitlines() if line.startswith("| 256 |")]
    assert len(rows) == 1 and "1500 x 200, 4000 x 503" in rows[0] and "2 x reset" in rows[0]
    assert "| 160.0 (150.0 / 170.0) |" in text and "interleaved for 2 round(s)" in text
    assert "| 2 of 5 |" in rows[0] and "| 0.80 / 0.10 |" in rows[0]
    assert "3.20x" in text and "Test CPU" in text and "max_inflight 8" in text
    readme = f"# t\n\nbefore\n{load.README_BEGIN}\nold\n{load.README_END}\nafter\n"
    updated = load.update_readme(readme, report)
    assert text in updated and "old" not in updated and updated.endswith("after\n")
    with pytest.raises(load.ConfigError):
        load.update_readme("no block here", report)


def test_outcomes_of_requests_without_an_answer():
    import asyncio

    assert load.outcome(ConnectionResetError()) == "reset"
    assert load.outcome(asyncio.IncompleteReadError(b"", 10)) == "closed"
    assert load.outcome(TimeoutError()) == "timeout"
    assert load.outcome(ConnectionRefusedError()) == "refused"
    assert load.outcome(ValueError("no Content-Length")) == "error"


@pytest.mark.slow
def test_end_to_end(tmp_path):
    out = tmp_path / "load.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{load.README_BEGIN}\n{load.README_END}\n")
    assert load.main(["--tiny", "--clients", "1,12", "--seconds", "2", "--pause", "2.5",
                      "--rounds", "1",
                      "--env", "POLYCHROME_MAX_INFLIGHT=1", "--env",
                      "POLYCHROME_MAX_WAITING=1", "--env", "OMP_NUM_THREADS=1",
                      "--json", str(out), "--readme", str(readme)]) == 0
    report = json.loads(out.read_text())
    assert report["server"]["max_inflight"] == 1 and report["server"]["max_waiting"] == 1
    one, many = report["runs"]
    assert one["clients"] == 1 and set(one["by_status"]) == {"200"}
    assert one["no_answer"] == {} and one["health_probes"] > 0
    # 12 clients against a bound of 1 + 1: refusals, answered at once, and no lost request.
    assert many["by_status"].get("503", 0) > 0 and many["by_status"].get("200", 0) > 0
    assert set(many["by_status"]) <= {"200", "503"} and many["no_answer"] == {}
    assert many["ready_saturated"] > 0 and many["cpu_cores"]["server"] > 0
    assert load.readme_table(report) in readme.read_text()
