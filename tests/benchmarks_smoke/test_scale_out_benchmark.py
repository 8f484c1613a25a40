"""benchmarks/scale_out.py: its figures, README's block (tests/test_docs_consistency.py
checks README against the committed JSON), and (slow, with PostgreSQL, redis-server and
nginx) one short run end to end. Figures from the short run mean nothing: only the
script's mechanics and outputs are checked."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import scale_out  # noqa: E402


def _run(n: int, seconds: float, ports: list[int]) -> dict:
    records = []
    for i in range(n):
        kind = scale_out.MIX[i % len(scale_out.MIX)][0]
        port = ports[i % len(ports)]
        status = 200 if i % 17 else 503
        records.append((kind, status, 0.01 * (1 + i % 10), f"127.0.0.1:{port}"))
    cpu = {f"api-{i + 1}": 0.9 * seconds for i in range(len(ports))}
    return {"elapsed_s": seconds, "records": records,
            "cpu_s": {**cpu, "load generator": 0.5 * seconds}}


def test_summary_and_tables():
    ports = {1001: "api-1", 1002: "api-2"}
    one = scale_out.summarise([_run(100, 10.0, [1001]), _run(120, 10.0, [1001])], ports)
    assert one["requests"] == 220 and one["throughput_rps"] == 11.0
    assert one["rounds_rps"] == [10.0, 12.0] and one["served_by"] == {"api-1": 220}
    assert one["by_status"]["503"] == sum(1 for i in range(100) if i % 17 == 0) + \
        sum(1 for i in range(120) if i % 17 == 0)
    assert one["ok_rps"] < one["throughput_rps"]
    assert 10 <= one["p50_ms"] <= 100 and one["p99_ms"] == 100.0
    assert one["by_kind"]["generate"] == 110
    assert one["cpu_cores"] == {"api-1": 0.9, "load generator": 0.5}
    two = scale_out.summarise([_run(300, 10.0, [1001, 1002])], ports)
    assert two["served_by"] == {"api-1": 150, "api-2": 150}
    report = {"commit": "abc123", "machine": {"cores": 2, "cpu": "Test CPU"},
              "load": {"clients": 4, "seconds": 10.0, "model": "m"},
              "mix": {"health": 1, "generate": 3}, "order": [1, 2],
              "configs": {"1": one, "2": two}, "speedup": 1.36}
    text = scale_out.readme_table(report)
    assert text.startswith(scale_out.README_BEGIN) and text.endswith(scale_out.README_END)
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")
            or line.startswith("| 2 |")]
    assert len(rows) == 2 and "| 11.0 (10.0 / 12.0) |" in rows[0]
    assert "| 0.90 / 0.50 |" in rows[0] and "| 0.90 + 0.90 / 0.50 |" in rows[1]
    assert "1.36x" in text and "Test CPU" in text
    readme = f"# t\n\nbefore\n{scale_out.README_BEGIN}\nold\n{scale_out.README_END}\nafter\n"
    updated = scale_out.update_readme(readme, report)
    assert text in updated and "old" not in updated and updated.endswith("after\n")
    with pytest.raises(scale_out.ConfigError):
        scale_out.update_readme("no block here", report)


@pytest.mark.slow
def test_end_to_end(tmp_path):
    sys.path.insert(0, str(REPO / "deploy"))
    import local_cluster

    missing = local_cluster.missing_binaries()
    if missing:
        if os.environ.get("POLYCHROME_REQUIRE_SERVICES") == "1":
            pytest.fail("POLYCHROME_REQUIRE_SERVICES=1 but missing: " + "; ".join(missing))
        pytest.skip("missing: " + "; ".join(missing))
    out = tmp_path / "s.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{scale_out.README_BEGIN}\n{scale_out.README_END}\n")
    assert scale_out.main(["--clients", "2", "--seconds", "1.5", "--rounds", "1",
                           "--warmup", "1", "--dir", str(tmp_path / "c"), "--json", str(out),
                           "--readme", str(readme)]) == 0
    report = json.loads(out.read_text())
    assert report["order"] == [1, 2] and len(report["rounds"]) == 2
    one, two = report["configs"]["1"], report["configs"]["2"]
    assert one["requests"] > 0 and set(one["by_status"]) == {"200"}
    assert set(one["served_by"]) == {"api-1"}
    assert set(two["by_status"]) == {"200"} and set(two["served_by"]) <= {"api-1", "api-2"}
    assert report["services"]["nginx"] and report["cluster"]["api_replicas"] == 2
    assert set(two["cpu_cores"]) == {"api-1", "api-2", "load generator"}
    assert two["cpu_cores"]["api-2"] > 0 and report["machine"]["load_average_1m_after"] >= 0
    assert scale_out.readme_table(report) in readme.read_text()
    assert json.loads((tmp_path / "c" / "cluster.json").read_text())["state"] == "down"
