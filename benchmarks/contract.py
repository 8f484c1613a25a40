"""The API's contract against a real service: schemathesis, every check, for a fixed time.

    python benchmarks/contract.py [--seconds 480] [--json docs/quality/schemathesis.json]

Starts `polychrome serve --workers 1` (one job worker) on a free loopback port in a
temporary home with the bundled models registered, and runs

    schemathesis run URL/openapi.json --checks all --max-time SECONDS --workers 1

from the repository root, so that the project's schemathesis.toml and its hooks
(tests/serving/schemathesis_hooks.py: they drop only the refusals no schema can state, by
error code, and give half of the schema-valid uploads a real picture) apply. Writes the
JSON (--json): command, commit, machine, the server's settings and models, schemathesis'
own summary (phases, test cases, failures, errors, warnings) and the dropped refusals
counted by check, status and code. Exit code: schemathesis' own (0: no failure).

tests/serving/test_schemathesis.py runs the same contract for a short time in CI, against
tiny models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import free_port, run_facts, run_script

from polychrome.errors import ConfigError
from polychrome.utils.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
SERVER_ENV = {
    "POLYCHROME_BUNDLED_MODELS": "1",
    "POLYCHROME_QUEUE_MAX": "100000",  # thousands of generated jobs: none refused as too many
    "POLYCHROME_JOB_LEASE_S": "3",
    "POLYCHROME_WORKER_POLL_S": "0.2",
    "POLYCHROME_JOB_PROGRESS_INTERVAL_S": "0.2",
    "OMP_NUM_THREADS": "1",
}


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 -- loopback
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "polychrome", "serve", "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"the server exited with {proc.returncode}:\n"
                              f"{log.read_text(errors='replace')[-2000:]}")
        try:
            if _get(url + "/api/health")[0] == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise ConfigError("the server did not answer /api/health within 180 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dropped_counts(path: Path) -> dict[str, Any]:
    """The hooks' dropped refusals (one JSON line each), counted by check, status and code."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    counts = Counter((r.get("check"), r.get("status"), r.get("code")) for r in rows)
    return {"total": len(rows),
            "by_check_status_code": [{"check": c, "status": s, "code": k, "count": n}
                                     for (c, s, k), n in counts.most_common()]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=480, help="schemathesis' time budget")
    p.add_argument("--json", type=Path, help="write the record here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    if args.seconds < 1:
        raise ConfigError("--seconds must be at least 1")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    if not schemathesis.is_file():
        raise ConfigError("schemathesis is not installed here (pip install -e '.[dev]')")
    facts = run_facts()
    with tempfile.TemporaryDirectory(prefix="polychrome-contract-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        home.mkdir()
        dropped = tmp_path / "dropped.jsonl"
        env = {**os.environ, **SERVER_ENV, "POLYCHROME_HOME": str(home)}
        proc, url = _start(env, tmp_path / "server.log")
        try:
            models = sorted(m["name"] for m in json.loads(_get(url + "/api/models")[1])["items"])
            report = tmp_path / "report"
            cmd = [str(schemathesis), "run", f"{url}/openapi.json", "--checks", "all",
                   "--max-time", str(args.seconds), "--workers", "1", "--request-timeout",
                   "200", "--report", "json", "--report-dir", str(report)]
            t0 = time.monotonic()
            run = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1",
                                      "POLYCHROME_CONTRACT_DROPPED": str(dropped)})
            seconds = time.monotonic() - t0
            alive = proc.poll() is None
        finally:
            _stop(proc)
        reports = sorted(report.glob("json-*.json"))
        summary = json.loads(reports[-1].read_text()) if reports else None
        drops = dropped_counts(dropped)
    print(run.stdout[-4000:])
    if summary is None:
        print(run.stderr[-4000:], file=sys.stderr)
        raise ConfigError("schemathesis wrote no report (its output is above)")
    record = {
        "what": "schemathesis, every check, against `polychrome serve` with one job worker "
                "and the bundled models",
        **facts,
        "schemathesis_command": "schemathesis run URL/openapi.json --checks all --max-time "
                                f"{args.seconds} --workers 1 --request-timeout 200",
        "config": "schemathesis.toml from the repository root and its hooks "
                  "(tests/serving/schemathesis_hooks.py)",
        "server": {"command": "polychrome serve --host 127.0.0.1 --workers 1",
                   "env": SERVER_ENV, "models": models, "alive_after": alive},
        "seconds": round(seconds, 1),
        "exit_code": run.returncode,
        "summary": summary,
        "dropped_by_filter_failure": drops,
    }
    if args.json:
        atomic_write_json(args.json, record)
    cases = summary.get("test_cases", {})
    print(f"contract: {cases} errors={len(summary.get('errors') or [])} "
          f"exit={run.returncode} dropped={drops['total']} server alive={alive}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
