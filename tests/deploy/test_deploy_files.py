"""deploy/: the nginx configuration (checked by nginx itself, and run in front of two stub
replicas), compose.yaml, the Dockerfile and the local cluster's command line. Fast: no
Polychrome process is started here (tests/deploy/test_cluster.py does that)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy import DEPLOY, REPO, local_cluster, require_nginx
from polychrome.settings import Settings

NGINX_CONF = DEPLOY / "nginx.conf"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"


# -- the configuration's text -----------------------------------------------------------------
def _block(conf: str, header: str) -> str:
    """The body of the first `header {` ... `}` block (nested braces counted)."""
    start = conf.index(header + " {") + len(header) + 2
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        i += 1
    return conf[start:i - 1]


def test_committed_nginx_conf_is_the_rendered_one():
    assert NGINX_CONF.read_text() == local_cluster.compose_nginx_conf(), \
        "deploy/nginx.conf differs from local_cluster.compose_nginx_conf(): re-render it"


@pytest.mark.parametrize("conf", [
    pytest.param(lambda: NGINX_CONF.read_text(), id="compose"),
    pytest.param(lambda: local_cluster.local_nginx_conf(
        ["127.0.0.1:9001", "127.0.0.1:9002"], 9000, "/x", "/x/logs"), id="local"),
])
def test_proxy_settings_match_the_app(conf):
    text, app = conf(), Settings()
    api, sessions = _block(text, "upstream polychrome_api"), \
        _block(text, "upstream polychrome_sessions")
    # Sessions hash on the id the map takes from the path; everything else is balanced.
    assert "hash $polychrome_session consistent;" in sessions and "hash" not in api
    assert re.search(r"~\^/api/restyle/sessions/\(\?<session_id>\[\^/\]\+\)\s+\$session_id;",
                     _block(text, "map $uri $polychrome_session"))
    assert "proxy_pass http://polychrome_sessions;" in _block(
        text, "location ~ ^/api/restyle/sessions/[^/]+")
    for up in (api, sessions):
        assert all("max_fails=1 fail_timeout=" in line
                   for line in up.splitlines() if line.strip().startswith("server "))
    # Body cap = the app's max_body_bytes; read timeout a bit above its generate timeout.
    mib = int(re.search(r"client_max_body_size (\d+)m;", text).group(1))
    assert mib * 1024 * 1024 == app.max_body_bytes
    read = int(re.search(r"\n\s+proxy_read_timeout (\d+)s;", text).group(1))
    assert app.generate_timeout_s < read <= app.generate_timeout_s + 30
    assert "proxy_next_upstream error timeout;" in text
    assert "proxy_request_buffering on;" in text
    for header in ("X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme",
                   "X-Real-IP $remote_addr", "X-Forwarded-Host $host"):
        assert f"proxy_set_header {header};" in text
    sse = _block(text, "location ~ ^/api/jobs/[^/]+/events$")
    for line in ("proxy_buffering off;", "proxy_read_timeout 1h;",
                 "add_header X-Accel-Buffering no always;"):
        assert line in sse


def _nginx_copy_of_compose_conf(tmp: Path) -> Path:
    """deploy/nginx.conf with what only exists inside compose replaced: the `api` host, the
    image's `nginx` user, and paths nginx -t would touch outside `tmp`."""
    text = NGINX_CONF.read_text()
    text = text.replace("server api:8765", "server 127.0.0.1:8765")
    user = local_cluster.local_nginx_conf(["127.0.0.1:1"], 1, tmp, tmp).split("\n")
    user_line = next((line for line in user if line.startswith("user ")), "")
    text = text.replace("user nginx;", user_line)
    text = text.replace("pid /run/nginx.pid;", f"pid {tmp}/nginx.pid;")
    temps = "".join(f"    {t}_temp_path {tmp}/tmp/{t};\n" for t in local_cluster.NGINX_TEMP_DIRS)
    text = text.replace("http {\n", "http {\n" + temps, 1)
    local_cluster.prepare_nginx_prefix(tmp)
    out = tmp / "compose-nginx.conf"
    out.write_text(text)
    return out


def test_nginx_accepts_both_configurations(tmp_path):
    require_nginx()
    ok, out = local_cluster.nginx_test(_nginx_copy_of_compose_conf(tmp_path / "c"),
                                       tmp_path / "c")
    assert ok, out
    prefix = tmp_path / "l"
    local_cluster.prepare_nginx_prefix(prefix)
    conf = prefix / "nginx.conf"
    conf.write_text(local_cluster.local_nginx_conf(
        ["127.0.0.1:9001", "127.0.0.1:9002"], local_cluster.free_port(), prefix,
        prefix / "logs"))
    ok, out = local_cluster.nginx_test(conf, prefix)
    assert ok, out


# -- nginx in front of two stub replicas ------------------------------------------------------
# A stub replica in its own process (so it can be killed like one): answers JSON with its
# port, the path and the request headers; /…/events streams two events 1.5 s apart.
STUB = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path.endswith("/events"):
            # No X-Accel-Buffering from this "app": the location itself must not buffer.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, pause in ((0, 1.5), (1, 0)):
                data = f"event: progress\ndata: {i}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
            return
        self._json({"port": port, "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._json({"port": self.server.server_address[1], "received": len(body)})

srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def _start_stub() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", STUB], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    return proc, int(proc.stdout.readline())


def _stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def proxied(tmp_path) -> Iterator[dict]:
    """nginx with the local cluster's configuration in front of two stub replicas."""
    require_nginx()
    stubs = [_start_stub() for _ in range(2)]
    ports = [port for _, port in stubs]
    prefix = tmp_path / "nginx"
    local_cluster.prepare_nginx_prefix(prefix)
    port = local_cluster.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(local_cluster.local_nginx_conf([f"127.0.0.1:{p}" for p in ports], port,
                                                   prefix, prefix / "logs"))
    log = open(prefix / "logs" / "nginx.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["nginx", "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not local_cluster._port_open(port):
            assert proc.poll() is None, (prefix / "logs" / "nginx.log").read_text()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield {"client": client, "stubs": [p for p, _ in stubs], "ports": ports}
    finally:
        _stop(proc, signal.SIGQUIT)
        log.close()
        for p, _ in stubs:
            _stop(p)


def test_nginx_balances_pins_sessions_and_skips_a_dead_replica(proxied):
    client, ports = proxied["client"], proxied["ports"]
    seen = set()
    for _ in range(8):
        r = client.get("/api/health")
        assert r.status_code == 200
        seen.add(r.json()["port"])
        assert r.headers["x-upstream-addr"].endswith(f":{r.json()['port']}")
    assert seen == set(ports), "plain requests were not spread over both replicas"
    hdrs = client.get("/api/models").json()["headers"]
    assert hdrs["x-forwarded-for"] == "127.0.0.1" and hdrs["x-forwarded-proto"] == "http"
    assert hdrs["x-real-ip"] == "127.0.0.1" and len(hdrs["x-request-id"]) == 32
    # One session id -> one replica, every time; many ids use both.
    for sid in ("a1b2", "c3d4", "e5f6"):
        pinned = {client.get(f"/api/restyle/sessions/{sid}/x").json()["port"] for _ in range(5)}
        assert len(pinned) == 1, sid
    spread = {client.get(f"/api/restyle/sessions/s{i}").json()["port"] for i in range(24)}
    assert spread == set(ports)
    # Bodies pass (buffered, then sent on).
    assert client.post("/api/generate", content=b"x" * 3_000_000).json()["received"] == 3_000_000

    # A dead replica: every request still answers, from the other one; sessions too.
    _stop(proxied["stubs"][0])  # kill -9
    for i in range(10):
        r = client.get("/api/health")
        assert r.status_code == 200 and r.json()["port"] == ports[1]
        r = client.post("/api/jobs", json={"i": i})
        assert r.status_code == 200 and r.json()["port"] == ports[1]
        r = client.get(f"/api/restyle/sessions/s{i}/render")
        assert r.status_code == 200 and r.json()["port"] == ports[1]
    # None left: nginx's own 502, in the API's error shape.
    _stop(proxied["stubs"][1])
    r = client.get("/api/health")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_nginx_passes_job_events_unbuffered(proxied):
    client = proxied["client"]
    t0 = time.monotonic()
    with client.stream("GET", "/api/jobs/abc/events") as r:
        assert r.status_code == 200
        assert r.headers["x-accel-buffering"] == "no"
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        t_first = time.monotonic() - t0
        rest = [line for line in lines if line.startswith("data:")]
    assert first == "data: 0" and rest == ["data: 1"]
    assert t_first < 1.0, f"the first event took {t_first:.2f} s: nginx buffered the stream"


# -- compose.yaml -----------------------------------------------------------------------------
def test_compose_topology():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"nginx", "api", "worker", "postgres", "redis"}
    assert set(spec["volumes"]) == {"storage", "pgdata"}
    api, worker = services["api"], services["worker"]
    assert api["command"][:2] == ["polychrome", "serve"] and "--workers" in api["command"]
    assert api["command"][api["command"].index("--workers") + 1] == "0"
    assert api["command"][api["command"].index("--port") + 1] == "8765"
    assert worker["command"] == ["polychrome", "worker"]
    assert api["deploy"]["replicas"] >= 2 and worker["deploy"]["replicas"] >= 1
    assert api["image"] == worker["image"]
    build = api["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert "TORCH_VARIANT" in build["args"]
    for svc in (api, worker):
        env = svc["environment"]
        storage = env["POLYCHROME_STORAGE_ROOT"]
        assert f"storage:{storage}" in svc["volumes"]
        assert re.fullmatch(r"postgresql\+psycopg://polychrome:\$\{POSTGRES_PASSWORD:-\w+\}"
                            r"@postgres:5432/polychrome", env["POLYCHROME_DATABASE_URL"])
        assert env["POLYCHROME_QUEUE_URL"] == "redis://redis:6379/0"
        assert env["POLYCHROME_HOME"] != storage and env["POLYCHROME_CACHE_DIR"] != storage
        for dep in ("postgres", "redis"):
            assert svc["depends_on"][dep]["condition"] == "service_healthy"
    assert worker["healthcheck"]["disable"] is True and worker["stop_grace_period"]
    assert api["environment"]["FORWARDED_ALLOW_IPS"]
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_USER"] == "polychrome"
    assert pg["environment"]["POSTGRES_DB"] == "polychrome"
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"] and pg["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"]
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    listen = re.search(r"\n\s+listen (\d+);", NGINX_CONF.read_text()).group(1)
    assert any(str(p).endswith(f":{listen}") for p in nginx["ports"])


# -- Dockerfile -------------------------------------------------------------------------------
def test_dockerfile():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG TORCH_VARIANT=cpu" in lines
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}" in lines
    assert re.search(r"FROM \$\{PYTHON_IMAGE\}", text) and "ARG PYTHON_IMAGE=python:3.11-slim" \
        in lines
    assert '".[serve,scale]"' in text
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = next(line for line in lines if line.startswith("CMD [\"python\""))
    assert "/api/health" in health and "HEALTHCHECK" in text
    cmd = json.loads(lines[-1].removeprefix("CMD "))
    assert cmd[:2] == ["polychrome", "serve"] and cmd[cmd.index("--workers") + 1] == "0"
    # Everything it copies exists and passes its .dockerignore; the extras it asks for exist.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for name in src.split():
            assert (REPO / name).exists(), name
            assert f"!{name.rstrip('/')}" in ignore.replace("/\n", "\n"), name
    pyproject = (REPO / "pyproject.toml").read_text()
    for extra in ("serve", "scale"):
        assert re.search(rf"^{extra} = \[", pyproject, flags=re.M), extra


# -- the local cluster's command line ---------------------------------------------------------
def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DEPLOY / "local-cluster"), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable,
                                                      **(env or {})})


def test_cli_errors_are_one_line(tmp_path):
    assert os.access(DEPLOY / "local-cluster", os.X_OK)
    r = _cli("status", "--dir", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "cluster.json" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    # No nginx or redis-server on PATH: said plainly, nothing started.
    empty = tmp_path / "bin"
    empty.mkdir()
    r = _cli("up", "--dir", str(tmp_path / "c"), env={"PATH": str(empty)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "nginx" in r.stderr and "redis-server" in r.stderr
    assert not (tmp_path / "c" / "cluster.json").exists()
    r = _cli("up", "--dir", str(tmp_path / "c"), "--env", "no-equals")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


def test_missing_binaries_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(local_cluster, "find_pg_bin", lambda: None)
    text = " ".join(local_cluster.missing_binaries())
    for word in ("initdb", "redis-server", "nginx", "apt-get"):
        assert word in text
    monkeypatch.undo()
    if shutil.which("nginx") and shutil.which("redis-server") and local_cluster.find_pg_bin():
        assert local_cluster.missing_binaries() == []
