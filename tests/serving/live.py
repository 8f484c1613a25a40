"""Helpers for the service tests: `polychrome serve` in a subprocess on a free loopback port."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

# Short leases and polls so kill/restart tests finish in seconds, not minutes.
FAST_ENV = {
    "POLYCHROME_JOB_LEASE_S": "3",
    "POLYCHROME_WORKER_POLL_S": "0.2",
    "POLYCHROME_JOB_PROGRESS_INTERVAL_S": "0.2",
    "OMP_NUM_THREADS": "1",  # two cores shared by the server, the worker and pytest
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class LiveServer:
    proc: subprocess.Popen
    url: str
    home: Path
    log_path: Path
    headers: dict[str, str]

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.url, headers=self.headers, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stored(self, path: str) -> Path:
        """A path the API answers (relative to the storage root, here the home) on disk."""
        return self.home / path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_server(home: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 90.0) -> LiveServer:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {**os.environ, **FAST_ENV, "POLYCHROME_HOME": str(home), **(env or {})}
    log_path = home.parent / f"{home.name}-server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "polychrome", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    server = LiveServer(proc, f"http://127.0.0.1:{port}", home, log_path, headers or {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(server.url + "/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server did not come up in {timeout} s:\n{server.log()[-3000:]}")


def wait_for(predicate, timeout: float, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    def done():
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"job {job_id}")


def shapes_zip(tmp: Path, n: int = 16, size: int = 32) -> bytes:
    from polychrome.data.synthetic import make_shapes_dataset

    out = make_shapes_dataset(tmp / "shapes", n=n, size=size)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(out.rglob("*.png")):
            z.write(p, p.relative_to(out).as_posix())
    return buf.getvalue()


def png_bytes(size: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def sse_events(response: httpx.Response):
    """(event, data) pairs from a text/event-stream response, as they arrive."""
    import json

    event, data = None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if event is not None:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


# A translator trained in crops mode (as `polychrome train --crop` exports it): it runs at
# the picture's own size. Tiny bottleneck so pictures of a few hundred pixels take ms.
NATIVE_META = {"fit": "crops", "crop": 16, "scale": [16, 48]}
NATIVE_STARGAN = dict(resolution=16, num_domains=3, width=8, max_width=16, style_dim=8,
                      latent_dim=4, mapping_dim=16, mapping_shared_layers=1,
                      mapping_head_layers=1, e_width=8, e_max_width=16, d_width=8,
                      d_max_width=16, enc_blocks=1, dec_blocks=1)


def register_tiny(home: Path, arch: str, name: str, styles: list[str], *,
                  meta: dict | None = None, **cfg) -> None:
    """Save a tiny, untrained model and add it to the store of `home` (before a server
    starts there), without leaving POLYCHROME_HOME changed for the test process.

    `meta` adds to the model's metadata, e.g. {"fit": "crops", "crop": 16, "scale":
    [16, 48]} for a translator trained on crops (it runs at the picture's own size)."""
    import torch

    from polychrome.models import create_model
    from polychrome.persistence.models import add_model_version

    old = os.environ.get("POLYCHROME_HOME")
    os.environ["POLYCHROME_HOME"] = str(home)
    try:
        torch.manual_seed(0)
        model = create_model(arch, **cfg)
        model.meta["styles"] = list(styles)
        model.meta.update(meta or {})
        d = home.parent / f"{name}-dir"
        model.save_pretrained(d, modules=model.inference_modules, meta=dict(model.meta))
        add_model_version(d, name)
    finally:
        if old is None:
            os.environ.pop("POLYCHROME_HOME", None)
        else:
            os.environ["POLYCHROME_HOME"] = old


def png_answer(r: httpx.Response) -> tuple[np.ndarray, dict[str, str]]:
    """A 200 image/png answer -> (its pixels, its PNG metadata)."""
    from polychrome.imageio import decode_image, read_png_metadata

    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return decode_image(r.content), read_png_metadata(r.content)


def api_error(r: httpx.Response, status: int, code: str, *words: str) -> None:
    """The answer is the API's error body with this status and code, naming `words`."""
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code, err
    for w in words:
        assert w in err["message"], err


def gallery_record(client: httpx.Client, r: httpx.Response) -> dict:
    """The gallery record of a saved answer; its PNG is exactly what was answered."""
    image_id = int(r.headers["x-polychrome-image-id"])
    assert r.headers["location"] == f"/api/images/{image_id}.png"
    assert client.get(f"/api/images/{image_id}.png").content == r.content
    return client.get(f"/api/images/{image_id}").json()
