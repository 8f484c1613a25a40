"""Load on POST /api/generate: throughput and p50/p99 latency, micro-batching on vs off.

Starts `polychrome serve` (no job workers) on a free loopback port in a temporary
home with an untrained tiny DCGAN registered, then sends a bounded number of
n=1 requests from 1 and from 32 concurrent clients. Prints figures; asserts nothing.
Each request is generated, PNG-encoded and stored in the gallery (fsync + SQLite),
as in production. Warm-up rounds first: the batcher verifies each new batch size
once per model (computing it both ways), which is not steady-state cost.

    python benchmarks/serve_load.py [--requests 256] [--resolution 32] [--width 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _register_model(home: Path, resolution: int, width: int) -> None:
    os.environ["POLYCHROME_HOME"] = str(home)
    import torch

    from polychrome.models import create_model
    from polychrome.persistence.models import add_model_version

    torch.manual_seed(0)
    model = create_model("dcgan", resolution=resolution, width=width, z_dim=64, num_domains=4)
    model.meta["styles"] = ["a", "b", "c", "d"]
    model.save_pretrained(home.parent / "bench-model")
    add_model_version(home.parent / "bench-model", "bench")


def _start(home: Path, batching: bool) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "polychrome", "serve", "--port", str(port), "--workers", "0"]
    if not batching:
        cmd.append("--no-batching")
    env = {**os.environ, "POLYCHROME_HOME": str(home), "POLYCHROME_RATE_LIMIT": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


async def _load(url: str, clients: int, total: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def client(c: httpx.AsyncClient) -> None:
        for i in counter:
            t0 = time.perf_counter()
            r = await c.post("/api/generate", json={"model": "bench", "seed": i})
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        # Warm up: load the model, and let the batcher meet (and verify once) its batch sizes.
        for _ in range(3):
            await asyncio.gather(*(c.post("/api/generate", json={"model": "bench", "seed": s})
                                   for s in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return elapsed, latencies


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=256, help="requests per measurement")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="polychrome-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        _register_model(home, args.resolution, args.width)
        print(f"POST /api/generate n=1, untrained DCGAN {args.resolution}px width {args.width}, "
              f"{args.requests} requests per row, {os.cpu_count()} CPUs")
        print(f"{'batching':>9} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        results = {}
        for batching in (False, True):
            proc, url = _start(home, batching)
            try:
                for clients in (1, 32):
                    total = args.requests if clients > 1 else max(32, args.requests // 4)
                    elapsed, lat = asyncio.run(_load(url, clients, total))
                    rps = total / elapsed
                    results[(batching, clients)] = rps
                    print(f"{'on' if batching else 'off':>9} {clients:>7} {rps:8.1f} "
                          f"{_pct(lat, 50) * 1e3:8.1f} {_pct(lat, 99) * 1e3:8.1f}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        for clients in (1, 32):
            ratio = results[(True, clients)] / results[(False, clients)]
            print(f"throughput batching on/off at {clients} client(s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
