"""Scale-out: API throughput and latency through nginx with 1 and with 2 API replicas.

    python benchmarks/scale_out.py [--clients 16] [--seconds 20] [--rounds 3]
        [--model emoji-stylegan] [--workers 1] [--dir DIR]
        [--json docs/quality/scale_out.json] [--readme README.md]

Starts the local cluster (deploy/local_cluster.py: PostgreSQL, Redis, shared storage, nginx)
with 2 API replicas and --workers job workers (idle: readiness needs one), every replica
with one torch thread. The same fixed load then runs against nginx with its upstream set to
one replica and to both (a graceful nginx reload in between; the other replica stays up
but idle), interleaved 1, 2, 1, 2, ... for --rounds rounds, so a change of the machine's
load hits both configurations alike.

The load: --clients concurrent clients (one asyncio process, keep-alive connections), each
sending requests back to back for --seconds, cycling through a fixed mix: GET /api/health,
GET /api/models, GET /api/jobs?limit=10, and POST /api/generate (n=1, --model, a fresh
seed each time: generated, PNG-encoded, stored in the shared gallery and recorded in
PostgreSQL) every other request. Before the first round every replica generates a few
images directly (model loaded, batch sizes verified).

Prints per configuration the throughput (requests answered per second, all rounds), p50 /
p99 latency (all requests, and generate alone), the CPU each replica and the load
generator used (cores: CPU seconds per second of the runs), the answers by status and
the requests each replica served; writes the JSON (--json: command, commit, machine, the services'
versions, every round's figures) and, with --readme, re-renders README's scale-out block
from it (`readme_table`). The load generator runs on the same machine as the cluster (on 2
cores it takes a share of them): compare figures from one run. Exit code 0 whenever the
measurement finishes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from common import run_facts, run_script

from polychrome.errors import ConfigError
from polychrome.utils.atomic import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))
import local_cluster  # noqa: E402

OUT_JSON = REPO / "docs" / "quality" / "scale_out.json"
# (kind, method, path); "generate" posts a fresh seed each time.
MIX = (("health", "GET", "/api/health"), ("generate", "POST", "/api/generate"),
       ("models", "GET", "/api/models"), ("generate", "POST", "/api/generate"),
       ("jobs", "GET", "/api/jobs?limit=10"), ("generate", "POST", "/api/generate"))
README_BEGIN = "<!-- scale-out-figures: rendered from docs/quality/scale_out.json -->"
README_END = "<!-- /scale-out-figures -->"


# -- the load ---------------------------------------------------------------------------------
async def _load(url: str, clients: int, seconds: float, model: str, seed0: int,
                watched: dict[str, int]) -> dict[str, Any]:
    """One run; also the CPU time (cores, over the run) of the `watched` processes."""
    records: list[tuple[str, int, float, str]] = []  # kind, status (0 = no answer), s, upstream
    seeds = iter(range(seed0, seed0 + 10**8))

    async def client(i: int, c: httpx.AsyncClient, stop_at: float) -> None:
        k = i  # clients start at different places in the mix
        while time.perf_counter() < stop_at:
            kind, method, path = MIX[k % len(MIX)]
            k += 1
            body = {"model": model, "n": 1, "seed": next(seeds)} if kind == "generate" \
                else None
            t0 = time.perf_counter()
            try:
                r = await c.request(method, path, json=body)
                status, upstream = r.status_code, r.headers.get("x-upstream-addr", "")
            except httpx.HTTPError:
                status, upstream = 0, ""
            records.append((kind, status, time.perf_counter() - t0, upstream))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        cpu0 = {name: cpu_seconds(pid) for name, pid in watched.items()}
        own0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, c, t0 + seconds) for i in range(clients)))
        elapsed = time.perf_counter() - t0
        own = time.process_time() - own0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in watched.items()}
    cpu["load generator"] = own
    return {"elapsed_s": elapsed, "records": records, "cpu_s": cpu}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarise(runs: list[dict[str, Any]], ports: dict[int, str]) -> dict[str, Any]:
    """Figures of one configuration over its rounds."""
    records = [r for run in runs for r in run["records"]]
    elapsed = sum(run["elapsed_s"] for run in runs)
    ok = [r for r in records if 200 <= r[1] < 300]
    lat = [r[2] for r in records]
    gen = [r[2] for r in records if r[0] == "generate"]
    served = Counter(ports.get(int(r[3].rsplit(":", 1)[-1]), r[3]) if r[3] else "none"
                     for r in records)
    names = sorted({name for run in runs for name in run.get("cpu_s", {})})
    cores = {name: round(sum(run["cpu_s"].get(name, 0.0) for run in runs) / elapsed, 2)
             for name in names}
    return {
        "requests": len(records),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(records) / elapsed, 2),
        "ok_rps": round(len(ok) / elapsed, 2),
        "rounds_rps": [round(len(run["records"]) / run["elapsed_s"], 2) for run in runs],
        "p50_ms": round(_pct(lat, 50) * 1e3, 1),
        "p99_ms": round(_pct(lat, 99) * 1e3, 1),
        "generate_p50_ms": round(_pct(gen, 50) * 1e3, 1) if gen else None,
        "generate_p99_ms": round(_pct(gen, 99) * 1e3, 1) if gen else None,
        "by_kind": dict(sorted(Counter(r[0] for r in records).items())),
        "by_status": {str(k): v for k, v in sorted(Counter(r[1] for r in records).items())},
        "served_by": dict(sorted(served.items())),
        "cpu_cores": cores,
    }


# -- the report -------------------------------------------------------------------------------
def table(report: dict[str, Any]) -> str:
    lines = ["| API replicas | req/s (per run) | p50 ms | p99 ms | generate p50 / p99 ms | "
             "CPU cores: replicas / load generator | answers |",
             "|---|---|---|---|---|---|---|"]
    for n, fig in sorted(report["configs"].items(), key=lambda kv: int(kv[0])):
        answers = ", ".join(f"{v} x {k}" for k, v in fig["by_status"].items())
        cores = fig.get("cpu_cores", {})
        replicas = " + ".join(f"{v:.2f}" for k, v in cores.items() if k != "load generator")
        cpu = f"{replicas or '?'} / {cores.get('load generator', 0.0):.2f}"
        lines.append(f"| {n} | {fig['throughput_rps']:.1f} "
                     f"({' / '.join(f'{x:.1f}' for x in fig['rounds_rps'])}) | "
                     f"{fig['p50_ms']:.0f} | {fig['p99_ms']:.0f} | "
                     f"{fig['generate_p50_ms']:.0f} / {fig['generate_p99_ms']:.0f} | "
                     f"{cpu} | {answers} |")
    return "\n".join(lines)


def readme_table(report: dict[str, Any]) -> str:
    """README's scale-out block, from the benchmark's JSON (a test checks README has it)."""
    load, mach = report["load"], report["machine"]
    kinds = ", ".join(f"{v} x {k}" for k, v in sorted(report["mix"].items()))
    lines = [README_BEGIN, "",
             f"{load['clients']} concurrent clients for {load['seconds']:g} s per run, runs "
             f"interleaved {', '.join(str(n) for n in report['order'])} replicas; each "
             f"client repeats {sum(report['mix'].values())} requests: {kinds} (GET "
             f"/api/health, /api/models, /api/jobs; POST /api/generate n=1 with "
             f"`{load['model']}`). Through "
             f"nginx to `polychrome serve` replicas on PostgreSQL + Redis + shared storage "
             f"(`benchmarks/scale_out.py`, commit {str(report.get('commit'))[:10]}; "
             f"{mach['cores']} cores, {mach['cpu']}, shared with the load generator, "
             f"PostgreSQL, Redis and nginx; load average {mach.get('load_average_1m')} "
             f"before the start).", "",
             table(report), "",
             f"2 replicas / 1: {report['speedup']:.2f}x the requests per second.", "",
             README_END]
    return "\n".join(lines)


def update_readme(text: str, report: dict[str, Any]) -> str:
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ConfigError("README has no scale-out figures block (its markers are missing)")
    return text[:start] + readme_table(report) + text[end + len(README_END):]


def _version(cmd: list[str]) -> str | None:
    exe = shutil.which(cmd[0]) or cmd[0]
    try:
        r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=10,
                           check=False)
    except OSError:
        return None
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else None


# -- entry ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (1 replica, 2 replicas)")
    ap.add_argument("--model", default="emoji-stylegan",
                    help="registered noise -> image model for the generate requests "
                         "(default: the bundled emoji-stylegan)")
    ap.add_argument("--workers", type=int, default=1, help="job workers (idle)")
    ap.add_argument("--warmup", type=int, default=8,
                    help="generate requests each replica answers before the first round")
    ap.add_argument("--dir", type=Path, default=None,
                    help="cluster directory (kept, with its logs; default: a temporary one)")
    ap.add_argument("--json", type=Path, default=OUT_JSON)
    ap.add_argument("--readme", type=Path, default=None,
                    help="also re-render this README's scale-out block from the new JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1 or args.workers < 1:
        raise ConfigError("--clients, --seconds, --rounds and --workers must be positive")
    missing = local_cluster.missing_binaries()
    if missing:
        raise ConfigError("the local cluster cannot start; missing: " + "; ".join(missing))
    facts = run_facts()  # the machine's load before the cluster starts
    with tempfile.TemporaryDirectory(prefix="polychrome-scale-out-") as tmp:
        directory = args.dir or Path(tmp) / "cluster"
        try:
            c = local_cluster.up(directory, api=2, workers=args.workers, env={
                "POLYCHROME_RATE_LIMIT": "0", "POLYCHROME_INFERENCE_THREADS": "1",
                "OMP_NUM_THREADS": "1"})
        except local_cluster.ClusterError as e:
            raise ConfigError(str(e)) from None
        try:
            report = {**facts, **_measure(c, args)}
            report["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
        finally:
            local_cluster.down(c)
    atomic_write_json(args.json, report)
    print(table(report))
    print(f"2 replicas / 1: {report['speedup']:.2f}x", file=sys.stderr)
    print(f"written: {args.json}", file=sys.stderr)
    if args.readme is not None:
        atomic_write_text(args.readme, update_readme(args.readme.read_text(), report))
        print(f"re-rendered: {args.readme}", file=sys.stderr)
    return 0


def _measure(c: local_cluster.Cluster, args: argparse.Namespace) -> dict[str, Any]:
    apis = c.by_role("api")
    ports = {p.port: p.name for p in apis}
    # Warm every replica the same way: the model loaded, the generate path exercised.
    for p in apis:
        with httpx.Client(base_url=f"http://127.0.0.1:{p.port}", timeout=120) as direct:
            if direct.get(f"/api/models/{args.model}").status_code != 200:
                raise ConfigError(f"no model {args.model!r} in the cluster (pass --model)")
            for s in range(args.warmup):
                r = direct.post("/api/generate", json={"model": args.model, "n": 1, "seed": s})
                r.raise_for_status()
    # CPU time per run of each replica and of this process (the load generator).
    watched = {p.name: p.pid for p in apis}
    order = [n for _ in range(args.rounds) for n in (1, 2)]
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    rounds = []
    for i, n in enumerate(order):
        local_cluster.set_api_upstreams(c, [p.name for p in apis[:n]])
        run = asyncio.run(_load(c.url, args.clients, args.seconds, args.model, 10**6 * (i + 1),
                                watched))
        runs[n].append(run)
        fig = summarise([run], ports)
        rounds.append({"replicas": n, **{k: fig[k] for k in (
            "requests", "seconds", "throughput_rps", "p50_ms", "p99_ms", "by_status",
            "served_by", "cpu_cores")}})
        print(f"run {i + 1}/{len(order)}: {n} replica(s): {fig['throughput_rps']:.1f} req/s, "
              f"p50 {fig['p50_ms']:.0f} ms, p99 {fig['p99_ms']:.0f} ms", file=sys.stderr)
    local_cluster.set_api_upstreams(c, [p.name for p in apis])
    configs = {str(n): summarise(runs[n], ports) for n in (1, 2)}
    return {
        "services": {"nginx": _version(["nginx", "-v"]),
                     "postgres": _version([str(Path(c.pg["bin"]) / "postgres"), "--version"]),
                     "redis": _version(["redis-server", "--version"])},
        "cluster": {"api_replicas": len(apis), "workers": len(c.by_role("worker")),
                    "inference_threads": 1},
        "load": {"clients": args.clients, "seconds": args.seconds, "rounds": args.rounds,
                 "model": args.model, "warmup": args.warmup},
        "mix": dict(Counter(kind for kind, _, _ in MIX)),
        "order": order,
        "rounds": rounds,
        "configs": configs,
        "speedup": round(configs["2"]["throughput_rps"] / configs["1"]["throughput_rps"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
