"""Load: one API process at 1 client, at 32 and at 8 x 32 -- throughput, latency, shedding.

    python benchmarks/load.py [--model emoji-stylegan] [--clients 1,32,256] [--seconds 10]
        [--rounds 2] [--tiny] [--env NAME=VALUE ...] [--json docs/quality/load.json]
        [--readme README.md]

Starts `polychrome serve --workers 0` on a free loopback port in a temporary home (the
bundled models registered; --tiny registers an untrained 16 px DCGAN instead, for a quick
check of the script) with its default settings (rate limit off; --env adds settings). The
load: N closed-loop clients, each on its own keep-alive connection, sending POST
/api/generate (n=1, `--model`, a fresh seed each time: generated, PNG-encoded, stored in the
gallery) back to back for --seconds. A client refused with 503 / 429 waits the answer's
Retry-After (plus up to 10 % jitter), as a well-behaved client does, then sends again.
Beside the clients, one probe connection asks GET /api/health every 50 ms (is liveness
answered at once while inference is saturated?) and GET /api/ready every second (does it
report the saturation?). Runs go 1, 32, 8 x 32 clients (--clients), interleaved for --rounds
rounds (a change of the machine's load hits every count alike), after one warm-up (the
model loaded, the batch sizes met once: the micro-batcher verifies each size on first use).
`--env POLYCHROME_BATCHING=false` measures the same load with micro-batching off.

The clients are a minimal HTTP/1.1 client on asyncio streams, not httpx: the load generator
shares the machine's cores with the server, and httpx costs several times more CPU per
request. Every outcome is counted: answers by status, and requests that got no answer by
kind (reset: the connection was reset; closed: it closed before a whole answer; timeout;
refused; error).

Prints per run the throughput (200 answers per second), p50 / p99 / max latency of the 200
answers, how fast the 503s came, the answers by status, the requests without an answer,
the health probe's p99, what readiness said and the CPU the server and the load generator
used; writes the JSON (--json: command, commit, machine, the server's settings, every
run's figures) and, with --readme, re-renders README's load block from it
(`readme_table`). Exit code 0 whenever the measurement finishes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import free_port, run_facts, run_script

from polychrome.errors import ConfigError
from polychrome.utils.atomic import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parent.parent
OUT_JSON = REPO / "docs" / "quality" / "load.json"
README_BEGIN = "<!-- load-figures: rendered from docs/quality/load.json -->"
README_END = "<!-- /load-figures -->"
IDLE_RECONNECT_S = 2.0  # reconnect after this long idle (the server closes idle keep-alives)


# -- a minimal HTTP/1.1 client ------------------------------------------------------------------
class Conn:
    """One keep-alive connection; `request` -> (status, headers, body); errors raise."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def request(self, method: str, path: str, body: bytes | None = None,
                      timeout: float = 120.0) -> tuple[int, dict[str, str], bytes]:
        if self.writer is not None and time.monotonic() - self.used > IDLE_RECONNECT_S:
            self.close()
        try:
            return await asyncio.wait_for(self._roundtrip(method, path, body), timeout)
        except BaseException:
            self.close()
            raise

    async def _roundtrip(self, method: str, path: str,
                         body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" not in headers:
            raise ValueError(f"answer without Content-Length ({status})")
        content = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        self.used = time.monotonic()
        return status, headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def outcome(exc: BaseException) -> str:
    """A request without an answer, by kind."""
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError | asyncio.LimitOverrunError):
        return "closed"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return "error"


# -- the load -----------------------------------------------------------------------------------
async def _load(port: int, clients: int, seconds: float, model: str, seed0: int,
                server_pid: int) -> dict[str, Any]:
    """One run: `clients` closed-loop clients for `seconds`, and the probes."""
    records: list[tuple[int, float, str]] = []  # status (0 = no answer), seconds, what
    seeds = iter(range(seed0, seed0 + 10**8))
    t_start = time.perf_counter()
    stop_at = t_start + seconds

    async def client(i: int) -> None:
        conn = Conn("127.0.0.1", port)
        rng = random.Random(i)
        await asyncio.sleep(rng.random() * min(0.5, seconds / 10))  # not all at one instant
        while time.perf_counter() < stop_at:
            body = json.dumps({"model": model, "n": 1, "seed": next(seeds)}).encode()
            t0 = time.perf_counter()
            try:
                status, headers, _ = await conn.request("POST", "/api/generate", body)
                what = ""
            except Exception as e:  # noqa: BLE001 -- every failure is an outcome
                status, headers, what = 0, {}, outcome(e)
            records.append((status, time.perf_counter() - t0, what))
            if status in (429, 503):
                wait = float(headers.get("retry-after") or 1) * (1 + 0.1 * rng.random())
                await asyncio.sleep(max(0.0, min(wait, stop_at - time.perf_counter())))
            elif status == 0:
                await asyncio.sleep(0.1)
        conn.close()

    health: list[float] = []
    ready: list[tuple[int, bool | None]] = []

    async def probe() -> None:
        conn = Conn("127.0.0.1", port)
        next_ready = time.perf_counter() + 1.0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                status, _, _ = await conn.request("GET", "/api/health", timeout=30)
                health.append(time.perf_counter() - t0 if status == 200 else float("inf"))
            except Exception:  # noqa: BLE001
                health.append(float("inf"))
            if time.perf_counter() >= next_ready:
                next_ready += 1.0
                try:
                    status, _, content = await conn.request("GET", "/api/ready", timeout=30)
                    sat = bool(json.loads(content).get("checks", {}).get("saturated"))
                except Exception:  # noqa: BLE001
                    status, sat = 0, None
                ready.append((status, sat))
            await asyncio.sleep(0.05)
        conn.close()

    cpu0, own0 = cpu_seconds(server_pid), time.process_time()
    await asyncio.gather(probe(), *(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t_start
    return {"clients": clients, "elapsed_s": elapsed, "records": records, "health": health,
            "ready": ready,
            "cpu_s": {"server": cpu_seconds(server_pid) - cpu0,
                      "load generator": time.process_time() - own0}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds * 1e3, 1)


def summarise(run: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one run, or of the rounds of one client count together."""
    rounds = run if isinstance(run, list) else [run]
    run = {"clients": rounds[0]["clients"],
           "elapsed_s": sum(r["elapsed_s"] for r in rounds),
           "records": [x for r in rounds for x in r["records"]],
           "health": [x for r in rounds for x in r["health"]],
           "ready": [x for r in rounds for x in r.get("ready", [])],
           "cpu_s": {k: sum(r["cpu_s"].get(k, 0.0) for r in rounds)
                     for k in rounds[0]["cpu_s"]}}
    records, elapsed = run["records"], run["elapsed_s"]
    ok = [s for status, s, _ in records if status == 200]
    shed = [s for status, s, _ in records if status in (429, 503)]
    answered = [r for r in records if r[0] != 0]
    ready = run.get("ready", [])
    return {
        "clients": run["clients"],
        "seconds": round(elapsed, 2),
        "requests": len(records),
        "throughput_rps": round(len(ok) / elapsed, 2),
        "rounds_rps": [round(sum(1 for x in r["records"] if x[0] == 200) / r["elapsed_s"], 2)
                       for r in rounds],
        "answers_rps": round(len(answered) / elapsed, 2),
        "p50_ms": _ms(_pct(ok, 50)),
        "p99_ms": _ms(_pct(ok, 99)),
        "max_ms": _ms(max(ok)) if ok else None,
        "shed_p99_ms": _ms(_pct(shed, 99)),
        "by_status": {str(k): v for k, v in sorted(Counter(r[0] for r in answered).items())},
        "no_answer": dict(sorted(Counter(r[2] for r in records if r[0] == 0).items())),
        "health_p50_ms": _ms(_pct(run["health"], 50)),
        "health_p99_ms": _ms(_pct(run["health"], 99)),
        "health_probes": len(run["health"]),
        "ready_probes": len(ready),
        "ready_saturated": sum(1 for _, sat in ready if sat),
        "cpu_cores": {k: round(v / elapsed, 2) for k, v in run["cpu_s"].items()},
    }


# -- the report ---------------------------------------------------------------------------------
def table(report: dict[str, Any]) -> str:
    lines = ["| clients | 200/s (per round) | p50 / p99 / max ms (200s) | answers | no answer | "
             "503 p99 ms | /api/health p99 ms | ready: saturated | CPU cores: server / "
             "load generator |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fig in report["runs"]:
        answers = ", ".join(f"{v} x {k}" for k, v in fig["by_status"].items()) or "none"
        lost = ", ".join(f"{v} x {k}" for k, v in fig["no_answer"].items()) or "0"
        shed = "-" if fig["shed_p99_ms"] is None else f"{fig['shed_p99_ms']:.0f}"
        health = "-" if fig["health_p99_ms"] is None else f"{fig['health_p99_ms']:.0f}"
        cores = fig["cpu_cores"]
        lines.append(
            f"| {fig['clients']} | {fig['throughput_rps']:.1f}{_rounds(fig)} | "
            f"{_cell(fig['p50_ms'])} / "
            f"{_cell(fig['p99_ms'])} / {_cell(fig['max_ms'])} | {answers} | {lost} | {shed} | "
            f"{health} | {fig['ready_saturated']} of {fig['ready_probes']} | "
            f"{cores.get('server', 0.0):.2f} / {cores.get('load generator', 0.0):.2f} |")
    return "\n".join(lines)


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _rounds(fig: dict[str, Any]) -> str:
    per = fig.get("rounds_rps", [])
    return f" ({' / '.join(f'{x:.1f}' for x in per)})" if len(per) > 1 else ""


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """Throughput of the busiest runs over one client's; accepted p99 at 8x over 32's."""
    runs = {fig["clients"]: fig for fig in report["runs"]}
    one = runs.get(min(runs)) if runs else None
    mid = sorted(runs)[1] if len(runs) > 1 else None
    top = max(runs) if runs else None
    out: dict[str, float | None] = {"throughput_mid_over_one": None, "p99_top_over_mid": None}
    if one and mid is not None and one["throughput_rps"]:
        out["throughput_mid_over_one"] = round(runs[mid]["throughput_rps"]
                                               / one["throughput_rps"], 2)
    if mid is not None and top != mid and runs[mid]["p99_ms"] and runs[top]["p99_ms"]:
        out["p99_top_over_mid"] = round(runs[top]["p99_ms"] / runs[mid]["p99_ms"], 2)
    return out


def readme_table(report: dict[str, Any]) -> str:
    """README's load block, from the benchmark's JSON (a test checks README has it)."""
    load, mach, srv = report["load"], report["machine"], report["server"]
    clients = [fig["clients"] for fig in report["runs"]]
    r = report["ratios"]
    lines = [README_BEGIN, "",
             f"One `polychrome serve` process (defaults: max_inflight "
             f"{srv['max_inflight']}, max_waiting {srv['max_waiting']}, batching "
             f"{'on' if srv['batching'] else 'off'}, {srv['inference_threads']} torch "
             f"thread(s)); {', '.join(str(c) for c in clients)} closed-loop clients for "
             f"{load['seconds']:g} s per run, runs interleaved for {load.get('rounds', 1)} "
             f"round(s), sending POST /api/generate n=1 with "
             f"`{load['model']}` (generated, PNG-encoded, stored in the gallery); a refused "
             f"client waits its Retry-After (`benchmarks/load.py`, commit "
             f"{str(report.get('commit'))[:10]}; {mach['cores']} cores, {mach['cpu']}, "
             f"shared with the load generator; load average {mach.get('load_average_1m')} "
             f"before the start).", "",
             table(report), ""]
    if r.get("throughput_mid_over_one") is not None:
        lines.append(f"{clients[1]} clients / 1: {r['throughput_mid_over_one']:.2f}x the "
                     f"images per second.")
    if r.get("p99_top_over_mid") is not None:
        lines.append(f"{clients[-1]} clients: p99 of the accepted requests "
                     f"{r['p99_top_over_mid']:.2f}x its {clients[1]}-client value.")
    lines += ["", README_END]
    return "\n".join(lines)


def update_readme(text: str, report: dict[str, Any]) -> str:
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ConfigError("README has no load figures block (its markers are missing)")
    return text[:start] + readme_table(report) + text[end + len(README_END):]


# -- the server ---------------------------------------------------------------------------------
def _register_tiny(home: Path) -> None:
    """An untrained 16 px DCGAN named `tiny` in `home`'s store (the script's quick check)."""
    code = ("import torch\n"
            "from polychrome.models import create_model\n"
            "from polychrome.persistence.models import add_model_version\n"
            "from pathlib import Path\n"
            "torch.manual_seed(0)\n"
            "m = create_model('dcgan', resolution=16, width=8, z_dim=16)\n"
            f"d = Path({str(home.parent / 'tiny-model')!r})\n"
            "m.save_pretrained(d, modules=m.inference_modules, meta=dict(m.meta))\n"
            "add_model_version(d, 'tiny')\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "POLYCHROME_HOME": str(home)})


def _settings(env: dict[str, str]) -> dict[str, Any]:
    """The server's load-relevant settings, resolved as the server resolves them."""
    code = ("import json\n"
            "from polychrome.settings import Settings\n"
            "from polychrome.serving.admission import admission_limits\n"
            "s = Settings()\n"
            "i, w = admission_limits(s)\n"
            "print(json.dumps({'max_inflight': i, 'max_waiting': w, 'batching': s.batching,"
            " 'batch_wait_ms': s.batch_wait_ms, 'batch_max': s.batch_max,"
            " 'inference_threads': s.inference_threads,"
            " 'generate_timeout_s': s.generate_timeout_s}))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "polychrome", "serve", "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", "0"],
                                env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180

    async def up() -> bool:
        conn = Conn("127.0.0.1", port)
        try:
            return (await conn.request("GET", "/api/health", timeout=5))[0] == 200
        except Exception:  # noqa: BLE001
            return False
        finally:
            conn.close()

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"the server exited with {proc.returncode}:\n"
                              f"{log.read_text(errors='replace')[-2000:]}")
        if asyncio.run(up()):
            return proc, port
        time.sleep(0.3)
    proc.kill()
    raise ConfigError("the server did not answer /api/health within 180 s")


async def _warm(port: int, model: str, clients: int) -> None:
    """The model loaded and every batch size the runs will meet verified once."""
    conn = Conn("127.0.0.1", port)
    status, _, content = await conn.request(
        "POST", "/api/generate", json.dumps({"model": model, "seed": 0}).encode())
    conn.close()
    if status != 200:
        raise ConfigError(f"POST /api/generate with {model!r} answered {status}: "
                          f"{content[:300].decode(errors='replace')}")
    for _ in range(3):
        conns = [Conn("127.0.0.1", port) for _ in range(clients)]

        async def one(c: Conn, s: int) -> None:
            try:
                await c.request("POST", "/api/generate",
                                json.dumps({"model": model, "seed": s}).encode())
            except Exception:  # noqa: BLE001 -- warm-up: outcomes do not count
                pass
            c.close()

        await asyncio.gather(*(one(c, s) for s, c in enumerate(conns)))


# -- entry --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="emoji-stylegan",
                    help="registered noise -> image model (default: the bundled "
                         "emoji-stylegan)")
    ap.add_argument("--tiny", action="store_true",
                    help="register an untrained 16 px DCGAN `tiny` and use it (a quick check)")
    ap.add_argument("--clients", default="1,32,256",
                    help="comma-separated client counts, one run each (default 1,32,256: "
                         "8 x 32)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of runs (each round runs every client count once)")
    ap.add_argument("--pause", type=float, default=3.0,
                    help="seconds before each run (queues drain, readiness recovers)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the server, e.g. POLYCHROME_MAX_INFLIGHT=16")
    ap.add_argument("--json", type=Path, default=OUT_JSON)
    ap.add_argument("--readme", type=Path, default=None,
                    help="also re-render this README's load block from the new JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_script(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    try:
        counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--clients takes comma-separated numbers, got {args.clients!r}") \
            from None
    if len(set(counts)) != len(counts):
        raise ConfigError(f"--clients has a count twice: {args.clients!r}")
    if not counts or min(counts) < 1 or args.seconds <= 0 or args.rounds < 1:
        raise ConfigError("--clients, --seconds and --rounds must be positive")
    extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--env takes NAME=VALUE, got {item!r}")
        extra[name] = value
    model = "tiny" if args.tiny else args.model
    facts = run_facts()  # the machine's load before the server starts
    with tempfile.TemporaryDirectory(prefix="polychrome-load-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {**os.environ, "POLYCHROME_HOME": str(home), "POLYCHROME_RATE_LIMIT": "0",
               "POLYCHROME_BUNDLED_MODELS": "0" if args.tiny else "1", **extra}
        for k in ("POLYCHROME_DATABASE_URL", "POLYCHROME_QUEUE_URL",
                  "POLYCHROME_STORAGE_ROOT"):
            if k not in extra:
                env.pop(k, None)
        if args.tiny:
            _register_tiny(home)
        server = _settings(env)
        proc, port = _start(env, Path(tmp) / "server.log")
        try:
            # Warm-up at most at the server's capacity (nothing refused), then a pause:
            # no run starts with a saturation left over from the one before.
            capacity = server["max_inflight"] + server["max_waiting"]
            asyncio.run(_warm(port, model, max(1, min(max(counts), capacity, 64))))
            # Rounds interleave the client counts (1, 32, 256, 1, 32, 256, ...): a change
            # of the machine's load hits every count alike.
            raw: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
            order = [n for _ in range(args.rounds) for n in counts]
            for i, n in enumerate(order):
                time.sleep(args.pause)
                run = asyncio.run(_load(port, n, args.seconds, model, 10**7 * (i + 1),
                                        proc.pid))
                raw[n].append(run)
                fig = summarise(run)
                print(f"run {i + 1}/{len(order)}: {n} clients: {fig['throughput_rps']:.1f} "
                      f"x 200/s, p50 {_cell(fig['p50_ms'])} ms, p99 {_cell(fig['p99_ms'])} "
                      f"ms, {fig['by_status']}, no answer {fig['no_answer'] or 0}",
                      file=sys.stderr, flush=True)
            runs = [summarise(raw[n]) for n in counts]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    report: dict[str, Any] = {
        **facts,
        "server": {**server, "workers": 0, "env": extra},
        "load": {"model": model, "seconds": args.seconds, "clients": counts,
                 "rounds": args.rounds,
                 "pause_s": args.pause, "request": "POST /api/generate n=1",
                 "refused_clients": "wait Retry-After (+ up to 10 % jitter)"},
        "runs": runs,
    }
    report["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    report["ratios"] = ratios(report)
    atomic_write_json(args.json, report)
    print(table(report))
    print(json.dumps(report["ratios"]), file=sys.stderr)
    print(f"written: {args.json}", file=sys.stderr)
    if args.readme is not None:
        atomic_write_text(args.readme, update_readme(args.readme.read_text(), report))
        print(f"re-rendered: {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
