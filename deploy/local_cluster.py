#!/usr/bin/env python3
"""Polychrome's scale-out topology on one machine, without containers.

    deploy/local-cluster up --dir DIR [--api 2] [--workers 2] [--port PORT] [--lease S]
                            [--env K=V ...] [--timeout 240]
    deploy/local-cluster status --dir DIR
    deploy/local-cluster down --dir DIR [--timeout 30]

`up` starts, all on loopback:

- a private PostgreSQL cluster (its data directory in a fresh temporary directory, removed
  by `down`; run as the `postgres` user when this runs as root) with a `polychrome` database;
- a redis-server with no persistence (the job queue: a lost message is re-enqueued by the
  workers from the job table);
- N API replicas (`polychrome serve --workers 0`) and M job workers (`polychrome worker`),
  each with its own POLYCHROME_HOME and POLYCHROME_CACHE_DIR under DIR/nodes/NAME and one
  shared POLYCHROME_STORAGE_ROOT (DIR/storage);
- nginx in front (the configuration `render_nginx_conf` writes, the same as the compose
  topology's deploy/nginx.conf but for the ports chosen here);

then waits until /api/ready answers 200 through nginx (/api/health when there is no
worker), writes DIR/cluster.json (every process's role, name, pid, port, home and log
file) and prints that JSON object, alone, on stdout. Each process logs to
DIR/logs/NAME.log. `down` stops everything: nginx (graceful quit), APIs and workers
(SIGTERM: a training job checkpoints and goes back to the queue; SIGKILL after
--timeout), redis (shutdown without saving), PostgreSQL (`pg_ctl stop -m fast`), and
removes the PostgreSQL temporary directory. `status` prints which processes are alive
and what /api/ready says (exit 1 when one is not). A missing program is one line on
stderr and exit code 2.

Importable (tests and benchmarks put deploy/ on sys.path): `up`, `down`, `status`, `load`,
`kill`, `start_replica` (start a killed or new API replica or worker again),
`set_api_upstreams` (route nginx to a subset of the replicas), `missing_binaries`.
Only the processes recorded in cluster.json are ever signalled, each by its pid after
checking that the pid still belongs to the process that was started.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CLUSTER_FILE = "cluster.json"
PG_USER = "polychrome"  # the database's superuser (trust authentication, loopback only)
PG_DB = "polychrome"
PG_SYSTEM_USER = "postgres"  # PostgreSQL refuses to run as root
PG_PROGRAMS = ("initdb", "postgres", "pg_ctl", "createdb")
# The app's defaults the proxy is sized against (polychrome.settings.Settings).
APP_MAX_BODY_BYTES = 512 * 1024 * 1024
APP_GENERATE_TIMEOUT_S = 60
APP_PORT = 8765  # `polychrome serve`'s default port (the compose topology uses it)
NGINX_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class ClusterError(Exception):
    """A cluster operation failed for a reason the user can act on (one line, no traceback)."""


def log(msg: str) -> None:
    print(f"local-cluster: {msg}", file=sys.stderr, flush=True)


# -- the nginx configuration ------------------------------------------------------------------
def render_nginx_conf(servers: Sequence[str], *, listen: str, worker_processes: str = "auto",
                      user: str | None = None, pid: str = "/run/nginx.pid",
                      error_log: str = "stderr", access_log: str = "/dev/stdout",
                      temp_dir: str | None = None, upstream_header: bool = False,
                      fail_timeout_s: int = 10, title: str = "") -> str:
    """nginx.conf for API replicas at `servers` ("host:port" each).

    Two upstreams over the same replicas: `polychrome_sessions` hashes the live restyle
    session id (a session's cached content lives in one replica's memory, so its requests
    go to the same replica while it is up), `polychrome_api` balances everything else by
    least connections. (nginx would also fall back to round robin for an empty hash key,
    but keeping the hash to the session routes says so explicitly.) `upstream_header` adds
    `X-Upstream-Addr` to every answer (the local cluster's tests read it; it shows internal
    addresses, so the compose configuration leaves it out).
    """
    if not servers:
        raise ClusterError("nginx needs at least one API replica")
    body_mib = APP_MAX_BODY_BYTES // (1024 * 1024)
    read_timeout = APP_GENERATE_TIMEOUT_S + 15
    peers = "".join(f"        server {s} max_fails=1 fail_timeout={fail_timeout_s}s;\n"
                    for s in servers)
    debug = "add_header X-Upstream-Addr $upstream_addr always;\n"
    debug_server = " " * 8 + debug if upstream_header else ""
    debug_sse = " " * 12 + debug if upstream_header else ""
    temp = ""
    if temp_dir is not None:
        temp = "".join(f"    {kind}_temp_path {temp_dir}/{kind};\n"
                       for kind in NGINX_TEMP_DIRS)
    head = "".join(f"# {line}\n".replace("# \n", "#\n") for line in title.splitlines())
    user_line = f"user {user};\n" if user else ""
    return f"""{head}{user_line}worker_processes {worker_processes};
pid {pid};
error_log {error_log} warn;

events {{
    worker_connections 1024;
}}

http {{
    server_tokens off;
    default_type application/octet-stream;
    log_format polychrome '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                          '$request_time upstream=$upstream_addr/$upstream_status/'
                          '$upstream_response_time';
    access_log {access_log} polychrome;
{temp}
    # The live restyle session a request belongs to: /api/restyle/sessions/<id>[/...].
    map $uri $polychrome_session {{
        ~^/api/restyle/sessions/(?<session_id>[^/]+) $session_id;
        default "";
    }}

    # Passive health: one failed connection (or timeout) takes a replica out for
    # fail_timeout, then it is tried again, so a killed replica is skipped and a restarted
    # one comes back by itself. The upstream keep-alive is closed before uvicorn's own 5 s
    # idle timeout, so nginx never reuses a connection the replica is closing (a POST on
    # such a connection could not be retried).
    upstream polychrome_api {{
        least_conn;
{peers}        keepalive 32;
        keepalive_timeout 4s;
    }}

    upstream polychrome_sessions {{
        hash $polychrome_session consistent;
{peers}        keepalive 16;
        keepalive_timeout 4s;
    }}

    server {{
        listen {listen};

        # The app refuses bodies above max_body_bytes (512 MiB) itself; nginx stops them at
        # the same size before they reach a replica.
        client_max_body_size {body_mib}m;
        client_body_buffer_size 1m;
        # Request buffering stays on: nginx takes the whole upload (on disk above 1 MiB)
        # before it picks a replica, so a slow client never holds a replica's connection,
        # and a request whose replica refuses the connection (killed, restarting) is
        # passed to the next one with its body. Off, uploads would stream straight through
        # but a failed attempt could not be retried.
        proxy_request_buffering on;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Request-ID $request_id;

        proxy_connect_timeout 3s;
        # Above the app's generate_timeout_s ({APP_GENERATE_TIMEOUT_S} s): a generation that
        # takes too long gets the app's own 504 JSON, not nginx's.
        proxy_read_timeout {read_timeout}s;
        proxy_send_timeout {read_timeout}s;
        # A replica that refuses or times out is skipped; nginx retries POSTs only when the
        # request never reached a replica (non-idempotent requests are not replayed).
        proxy_next_upstream error timeout;
        proxy_next_upstream_timeout 15s;

        error_page 413 @payload_too_large;
        error_page 502 @unavailable;
        error_page 504 @gateway_timeout;
{debug_server}
        location / {{
            proxy_pass http://polychrome_api;
        }}

        location ~ ^/api/restyle/sessions/[^/]+ {{
            proxy_pass http://polychrome_sessions;
        }}

        # Job progress as Server-Sent Events: passed on as it comes, never buffered, kept
        # open for long jobs (the app sends a keep-alive comment every 15 s).
        location ~ ^/api/jobs/[^/]+/events$ {{
            proxy_pass http://polychrome_api;
            proxy_buffering off;
            proxy_cache off;
            gzip off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            add_header X-Accel-Buffering no always;
{debug_sse}        }}

        # nginx's own errors in the API's error shape.
        location @payload_too_large {{
            default_type application/json;
            return 413 '{{"error": {{"code": "payload_too_large", "message": "request body larger than {body_mib} MiB"}}}}';
        }}
        location @unavailable {{
            default_type application/json;
            return 502 '{{"error": {{"code": "upstream_unavailable", "message": "no API replica answered; try again"}}}}';
        }}
        location @gateway_timeout {{
            default_type application/json;
            return 504 '{{"error": {{"code": "upstream_timeout", "message": "the API replica did not answer in time"}}}}';
        }}
    }}
}}
"""


COMPOSE_TITLE = """\
nginx in front of the API replicas of deploy/compose.yaml (mounted as /etc/nginx/nginx.conf).
Rendered by deploy/local_cluster.py (compose_nginx_conf); the local cluster renders the
same configuration for its loopback ports. Do not edit by hand: a test checks they agree.

`api:8765` is resolved when nginx starts and names every replica of the api service
(Docker's DNS answers with one address per replica): after `docker compose up --scale
api=N`, restart (or reload) nginx so it sees the new replicas."""


def compose_nginx_conf() -> str:
    """deploy/nginx.conf: the compose topology's proxy (official nginx image)."""
    return render_nginx_conf([f"api:{APP_PORT}"], listen="8080", user="nginx",
                             pid="/run/nginx.pid", title=COMPOSE_TITLE)


# -- binaries ---------------------------------------------------------------------------------
def _pg_version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/(\d+(?:\.\d+)*)/bin$", path)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def find_pg_bin() -> Path | None:
    """The directory with PostgreSQL's server programs: $POLYCHROME_PG_BIN, the one an
    `initdb` on PATH links to, or the newest /usr/lib/postgresql/*/bin (Debian keeps them
    off PATH)."""
    env = os.environ.get("POLYCHROME_PG_BIN")
    candidates = [env] if env else []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_pg_version_key,
                         reverse=True)
    for c in candidates:
        d = Path(c)
        if all((d / b).is_file() for b in PG_PROGRAMS):
            return d
    return None


def _is_root() -> bool:
    return os.geteuid() == 0


def missing_binaries() -> list[str]:
    """What `up` needs and cannot find, each with how to get it ([] = nothing missing)."""
    missing = []
    if find_pg_bin() is None:
        missing.append(f"PostgreSQL server ({', '.join(PG_PROGRAMS)}): apt-get install "
                       "postgresql, or set POLYCHROME_PG_BIN to their directory")
    if shutil.which("redis-server") is None:
        missing.append("redis-server: apt-get install redis-server")
    if shutil.which("nginx") is None:
        missing.append("nginx: apt-get install nginx-light")
    if _is_root():
        if shutil.which("runuser") is None:
            missing.append("runuser (util-linux): needed to run PostgreSQL as root's "
                           "stand-in user")
        try:
            import pwd

            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            missing.append(f"a '{PG_SYSTEM_USER}' system user to run PostgreSQL as "
                           "(it refuses root): install postgresql, or run this as non-root")
    return missing


def _check_binaries() -> None:
    missing = missing_binaries()
    if missing:
        raise ClusterError("missing: " + "; ".join(missing))
    import importlib.util

    # The replicas and workers run as `sys.executable -m polychrome`.
    absent = [m for m in ("polychrome", "psycopg", "redis") if importlib.util.find_spec(m) is None]
    if absent:
        raise ClusterError(f"{sys.executable} cannot import {', '.join(absent)}: run this with "
                           "the Python Polychrome is installed in (activate its environment, "
                           "or set PYTHON for deploy/local-cluster), with the `serve` and "
                           "`scale` extras (pip install -e '.[serve,scale]')")


# -- processes --------------------------------------------------------------------------------
@dataclasses.dataclass
class Proc:
    role: str  # postgres | redis | api | worker | nginx
    name: str
    pid: int | None
    port: int | None
    log: str
    home: str | None = None
    cache: str | None = None
    start_ticks: int | None = None  # /proc/PID/stat start time: tells a reused pid apart
    cmd: list[str] = dataclasses.field(default_factory=list)


# Popen handles of the processes this Python process started: polled so that a killed
# child is reaped (a zombie would still answer kill(pid, 0)).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def _alive(pid: int | None, ticks: int | None = None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    now = _start_ticks(pid)
    if now is None:
        if not Path("/proc").is_dir():  # not Linux: only existence can be checked
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return False
    return ticks is None or now == ticks


def proc_alive(p: Proc) -> bool:
    return _alive(p.pid, p.start_ticks)


def _signal(p: Proc, sig: int) -> bool:
    """Send `sig` to the recorded process if it is still the one started; True if sent."""
    if not proc_alive(p):
        return False
    try:
        os.kill(p.pid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_gone(procs: Iterable[Proc], timeout: float) -> list[Proc]:
    """Wait until every process has exited; returns those still alive at the deadline."""
    left = list(procs)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = [p for p in left if proc_alive(p)]
        if left:
            time.sleep(0.1)
    return [p for p in left if proc_alive(p)]


def _spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
           cwd: str | Path | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: "
                  f"{' '.join(cmd)}\n".encode())
        out.flush()
        # Own session: a Ctrl-C in the terminal that ran `up` does not reach the cluster.
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    return proc


def _log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URLs
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return 0, b""


def _wait_for(what: str, check, procs: Sequence[Proc], timeout: float,
              interval: float = 0.3) -> None:
    """Poll `check()` until true; fail early (with its log) if a process in `procs` died."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        for p in procs:
            if not proc_alive(p):
                raise ClusterError(f"{p.name} exited while waiting for {what}; last lines of "
                                   f"{p.log}:\n{_log_tail(p.log)}")
        if time.monotonic() > deadline:
            logs = "; ".join(p.log for p in procs)
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what} "
                               f"(logs: {logs})")
        time.sleep(interval)


# -- the cluster record -----------------------------------------------------------------------
@dataclasses.dataclass
class Cluster:
    dir: Path
    port: int = 0  # nginx
    storage: str = ""
    database_url: str = ""
    queue_url: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # given to api / worker
    pg: dict[str, Any] = dataclasses.field(default_factory=dict)  # bin, tmp, data, port
    nginx: dict[str, Any] = dataclasses.field(default_factory=dict)  # prefix, conf, upstreams
    processes: list[Proc] = dataclasses.field(default_factory=list)
    state: str = "starting"  # starting | up | down

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def proc(self, name: str) -> Proc:
        for p in self.processes:
            if p.name == name:
                return p
        raise ClusterError(f"no process named {name!r} in {self.dir / CLUSTER_FILE}")

    def by_role(self, role: str) -> list[Proc]:
        return [p for p in self.processes if p.role == role]

    def to_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "state": self.state, "url": self.url, "port": self.port,
                "storage": self.storage, "database_url": self.database_url,
                "queue_url": self.queue_url, "env": self.env, "postgres": self.pg,
                "nginx": self.nginx,
                "processes": [dataclasses.asdict(p) for p in self.processes]}

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{CLUSTER_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.dir / CLUSTER_FILE)


def load(directory: str | Path) -> Cluster:
    d = Path(directory).resolve()
    try:
        data = json.loads((d / CLUSTER_FILE).read_text())
    except FileNotFoundError:
        raise ClusterError(f"{d} holds no cluster ({CLUSTER_FILE} is missing)") from None
    except (OSError, ValueError) as e:
        raise ClusterError(f"cannot read {d / CLUSTER_FILE}: {e}") from None
    return Cluster(dir=d, port=data["port"], storage=data["storage"],
                   database_url=data["database_url"], queue_url=data["queue_url"],
                   env=data.get("env", {}), pg=data.get("postgres", {}),
                   nginx=data.get("nginx", {}), state=data.get("state", "up"),
                   processes=[Proc(**p) for p in data["processes"]])


# -- PostgreSQL -------------------------------------------------------------------------------
def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd] if _is_root() else cmd


def _start_postgres(c: Cluster) -> None:
    pg_bin = find_pg_bin()
    assert pg_bin is not None
    # The data directory lives in a fresh temporary directory, not in DIR: the server runs
    # as `postgres` when we are root, and every parent of its data directory must let that
    # user through (pytest's and many users' directories are private).
    tmp = Path(tempfile.mkdtemp(prefix="polychrome-pg-"))
    tmp.chmod(0o755)
    if _is_root():
        import pwd

        pw = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data = tmp / "data"
    port = free_port()
    c.pg = {"bin": str(pg_bin), "tmp": str(tmp), "data": str(data), "port": port}
    c.save()  # from here on `down` knows what to remove
    log_path = c.logs / "postgres.log"
    init = _as_pg_user([str(pg_bin / "initdb"), "-D", str(data), "-U", PG_USER,
                        "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"])
    with open(log_path, "ab") as out:
        r = subprocess.run(init, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=subprocess.STDOUT, cwd=tmp, check=False)
    if r.returncode != 0:
        raise ClusterError(f"initdb failed (exit {r.returncode}); last lines of {log_path}:\n"
                           f"{_log_tail(log_path)}")
    # A throwaway cluster (deleted by `down`): no fsync. Loopback TCP only, the socket in
    # the temporary directory (not the system's /run/postgresql).
    cmd = _as_pg_user([str(pg_bin / "postgres"), "-D", str(data), "-p", str(port),
                       "-c", "listen_addresses=127.0.0.1",
                       "-c", f"unix_socket_directories={tmp}",
                       "-c", "max_connections=200", "-c", "fsync=off",
                       "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
    launcher = _spawn(cmd, log_path, cwd=tmp)
    c.pg["launcher_pid"] = launcher.pid
    proc = Proc(role="postgres", name="postgres", pid=launcher.pid, port=port,
                log=str(log_path), start_ticks=_start_ticks(launcher.pid), cmd=cmd)
    c.processes.append(proc)
    c.save()

    def accepting() -> bool:
        isready = pg_bin / "pg_isready"
        if not isready.is_file():
            return _port_open(port)
        return subprocess.run([str(isready), "-q", "-h", "127.0.0.1", "-p", str(port),
                               "-U", PG_USER, "-d", "postgres"], check=False,
                              stdin=subprocess.DEVNULL).returncode == 0

    _wait_for("PostgreSQL", accepting, [proc], 60)
    # Record the postmaster itself (when we are root, the launched process is runuser).
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        proc.pid, proc.start_ticks = pid, _start_ticks(pid)
    except (OSError, ValueError, IndexError):
        pass
    r = subprocess.run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", PG_USER, PG_DB], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ClusterError(f"creating the {PG_DB} database failed: {r.stderr.strip()}")
    c.database_url = f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/{PG_DB}"
    c.save()
    log(f"PostgreSQL on 127.0.0.1:{port} (data in {data})")


def _stop_postgres(c: Cluster, timeout: float) -> None:
    pg = c.pg
    data = pg.get("data")
    procs = c.by_role("postgres")
    if data and Path(data, "postmaster.pid").exists() and pg.get("bin"):
        cmd = _as_pg_user([str(Path(pg["bin"]) / "pg_ctl"), "stop", "-D", data, "-m", "fast",
                           "-w", "-t", str(int(max(5, timeout)))])
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=pg.get("tmp") or "/",
                           check=False)
        if r.returncode != 0:
            log(f"pg_ctl stop failed: {r.stderr.strip() or r.stdout.strip()}")
    for p in _wait_gone(procs, timeout):
        _signal(p, signal.SIGKILL)
    _wait_gone(procs, 5)
    launcher = _CHILDREN.pop(pg.get("launcher_pid") or 0, None)  # runuser, when root
    if launcher is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=5)
    tmp = pg.get("tmp")
    if tmp and Path(tmp).name.startswith("polychrome-pg-"):
        shutil.rmtree(tmp, ignore_errors=True)


# -- redis ------------------------------------------------------------------------------------
def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(c: Cluster) -> None:
    port = free_port()
    workdir = c.dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = c.logs / "redis.log"
    # No persistence: the queue carries only job ids, and workers re-enqueue a queued job
    # whose message was lost from the job table.
    cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port),
           "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir),
           "--daemonize", "no", "--protected-mode", "yes"]
    p = _spawn(cmd, log_path)
    proc = Proc(role="redis", name="redis", pid=p.pid, port=port, log=str(log_path),
                start_ticks=_start_ticks(p.pid), cmd=cmd)
    c.processes.append(proc)
    c.save()
    _wait_for("redis", lambda: _redis_ping(port), [proc], 30)
    c.queue_url = f"redis://127.0.0.1:{port}/0"
    c.save()
    log(f"redis on 127.0.0.1:{port}")


def _stop_redis(c: Cluster, timeout: float) -> None:
    procs = [p for p in c.by_role("redis") if proc_alive(p)]
    for p in procs:
        cli = shutil.which("redis-cli")
        sent = False
        if cli and p.port:
            r = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(p.port), "shutdown",
                                "nosave"], capture_output=True, timeout=10, check=False)
            sent = r.returncode == 0
        if not sent:
            _signal(p, signal.SIGTERM)
    for p in _wait_gone(procs, timeout):
        _signal(p, signal.SIGKILL)
    _wait_gone(procs, 5)


# -- API replicas and workers -----------------------------------------------------------------
def process_env(c: Cluster, home: str, cache: str) -> dict[str, str]:
    """The environment of an API replica or worker: the caller's, minus its POLYCHROME_*
    settings, plus the cluster's wiring and the `--env` values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCHROME_")}
    env.update({
        "POLYCHROME_HOME": home,
        "POLYCHROME_CACHE_DIR": cache,
        "POLYCHROME_STORAGE_ROOT": c.storage,
        "POLYCHROME_DATABASE_URL": c.database_url,
        "POLYCHROME_QUEUE_URL": c.queue_url,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(c.env)
    return env


def start_replica(c: Cluster, role: str, name: str, *, wait: bool = True,
                  timeout: float = 120.0) -> Proc:
    """Start API replica or worker `name` (again, after it was killed: same port, home and
    cache; or a new one). A new API replica is added to nginx's upstreams (reload)."""
    if role not in ("api", "worker"):
        raise ClusterError(f"start_replica starts 'api' or 'worker' processes, not {role!r}")
    existing = next((p for p in c.processes if p.name == name), None)
    if existing is not None:
        if existing.role != role:
            raise ClusterError(f"{name} is a {existing.role}, not a {role}")
        if proc_alive(existing):
            raise ClusterError(f"{name} is still running (pid {existing.pid})")
    node = c.dir / "nodes" / name
    home, cache = str(node / "home"), str(node / "cache")
    Path(home).mkdir(parents=True, exist_ok=True)
    Path(cache).mkdir(parents=True, exist_ok=True)
    port = (existing.port if existing else None) or (free_port() if role == "api" else None)
    if role == "api":
        cmd = [sys.executable, "-m", "polychrome", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "0"]
    else:
        cmd = [sys.executable, "-m", "polychrome", "worker"]
    log_path = c.logs / f"{name}.log"
    p = _spawn(cmd, log_path, env=process_env(c, home, cache))
    proc = Proc(role=role, name=name, pid=p.pid, port=port, log=str(log_path), home=home,
                cache=cache, start_ticks=_start_ticks(p.pid), cmd=cmd)
    if existing is not None:
        c.processes[c.processes.index(existing)] = proc
    else:
        c.processes.append(proc)
    c.save()
    if role == "api" and existing is None and c.nginx.get("conf") and c.by_role("nginx"):
        set_api_upstreams(c, [*c.nginx.get("upstreams", []), name])
    if wait and role == "api":
        wait_healthy(c, [proc], timeout)
    return proc


def wait_healthy(c: Cluster, procs: Sequence[Proc], timeout: float = 120.0) -> None:
    """Wait until each API replica answers /api/health on its own port."""
    for p in procs:
        _wait_for(f"{p.name} /api/health", lambda p=p: http_get(
            f"http://127.0.0.1:{p.port}/api/health", 2)[0] == 200, [p], timeout)


def _stop_group(procs: Sequence[Proc], timeout: float) -> None:
    """SIGTERM, then SIGKILL whatever has not exited after `timeout` seconds."""
    running = [p for p in procs if _signal(p, signal.SIGTERM)]
    stubborn = _wait_gone(running, timeout)
    for p in stubborn:
        log(f"{p.name} (pid {p.pid}) did not stop in {timeout:.0f} s; killing it")
        _signal(p, signal.SIGKILL)
    _wait_gone(stubborn, 10)


def kill(c: Cluster, name: str, sig: int = signal.SIGKILL) -> bool:
    """Signal one recorded process (default: kill -9) and, for SIGKILL, wait until it is
    gone; True if it was running."""
    p = c.proc(name)
    sent = _signal(p, sig)
    if sent and sig == signal.SIGKILL:
        _wait_gone([p], 10)
    return sent


# -- nginx ------------------------------------------------------------------------------------
def local_nginx_conf(servers: Sequence[str], port: int, prefix: str | Path,
                     logs: str | Path, title: str = "") -> str:
    """The local cluster's nginx.conf: loopback, temporary files, pid and logs in the
    cluster directory, one worker process, `X-Upstream-Addr` on every answer."""
    prefix = Path(prefix)
    user = None
    if _is_root():
        # Workers would otherwise switch to `nobody`, which cannot write the temporary
        # directories inside a private cluster directory; they stay with the caller's user.
        import grp
        import pwd

        user = f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"
    return render_nginx_conf(
        servers, listen=f"127.0.0.1:{port}", worker_processes="1", user=user,
        pid=str(prefix / "nginx.pid"), error_log="stderr",
        access_log=str(Path(logs) / "nginx-access.log"), temp_dir=str(prefix / "tmp"),
        upstream_header=True, fail_timeout_s=5, title=title)


def prepare_nginx_prefix(prefix: str | Path) -> None:
    """The directories a local_nginx_conf() expects under its prefix."""
    for d in (*(f"tmp/{t}" for t in NGINX_TEMP_DIRS), "logs"):
        (Path(prefix) / d).mkdir(parents=True, exist_ok=True)


def _nginx_cmd(c: Cluster, *extra: str) -> list[str]:
    return [shutil.which("nginx") or "nginx", "-p", c.nginx["prefix"] + "/", "-c",
            c.nginx["conf"], *extra]


def nginx_test(conf: str | Path, prefix: str | Path) -> tuple[bool, str]:
    """`nginx -t` on a configuration file; (ok, nginx's output)."""
    r = subprocess.run([shutil.which("nginx") or "nginx", "-t", "-p", f"{prefix}/", "-c",
                        str(conf)], capture_output=True, text=True, check=False)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def _write_nginx_conf(c: Cluster, api_names: Sequence[str]) -> None:
    prefix = Path(c.nginx["prefix"])
    prepare_nginx_prefix(prefix)
    new = Path(c.nginx["conf"] + ".new")
    new.write_text(local_nginx_conf(
        [f"127.0.0.1:{c.proc(n).port}" for n in api_names], c.port, prefix, c.logs,
        title=f"Written by deploy/local_cluster.py for the cluster in {c.dir}."))
    ok, out = nginx_test(new, prefix)
    if not ok:
        raise ClusterError(f"nginx refuses the configuration it was given ({new}):\n{out}")
    os.replace(new, c.nginx["conf"])
    c.nginx["upstreams"] = list(api_names)
    c.save()


def _start_nginx(c: Cluster) -> None:
    prefix = c.dir / "nginx"
    c.nginx = {"prefix": str(prefix), "conf": str(prefix / "nginx.conf"), "upstreams": []}
    if not c.port:
        c.port = free_port()
    _write_nginx_conf(c, [p.name for p in c.by_role("api")])
    cmd = _nginx_cmd(c, "-g", "daemon off;")
    log_path = c.logs / "nginx.log"
    p = _spawn(cmd, log_path)
    proc = Proc(role="nginx", name="nginx", pid=p.pid, port=c.port, log=str(log_path),
                start_ticks=_start_ticks(p.pid), cmd=cmd)
    c.processes.append(proc)
    c.save()
    _wait_for("nginx", lambda: _port_open(c.port), [proc], 30)
    log(f"nginx on 127.0.0.1:{c.port}")


def set_api_upstreams(c: Cluster, api_names: Sequence[str], settle_s: float = 1.0) -> None:
    """Route nginx to these API replicas only (rewrite, test, graceful reload)."""
    for n in api_names:
        if c.proc(n).role != "api":
            raise ClusterError(f"{n} is not an API replica")
    _write_nginx_conf(c, api_names)
    nginx = c.proc("nginx")
    if not _signal(nginx, signal.SIGHUP):
        raise ClusterError("nginx is not running")
    time.sleep(settle_s)  # new workers take over; old ones finish their requests


# -- up / down / status -----------------------------------------------------------------------
def _check_dir(d: Path) -> None:
    f = d / CLUSTER_FILE
    if f.exists():
        try:
            old = load(d)
        except ClusterError:
            return
        if any(proc_alive(p) for p in old.processes):
            raise ClusterError(f"a cluster is already running in {d}: run `down --dir {d}` "
                               "first")
        if old.state != "down":  # it died without `down`: remove what it left behind
            with contextlib.suppress(ClusterError):
                down(old, timeout=5)


def up(directory: str | Path, *, api: int = 2, workers: int = 2, port: int | None = None,
       lease: float | None = None, env: dict[str, str] | None = None,
       timeout: float = 240.0) -> Cluster:
    """Start the whole topology and wait until /api/ready answers 200 through nginx."""
    if api < 1 or workers < 0:
        raise ClusterError("--api must be >= 1 and --workers >= 0")
    _check_binaries()
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    _check_dir(d)
    c = Cluster(dir=d, port=port or 0, storage=str(d / "storage"))
    if lease is not None:
        c.env["POLYCHROME_JOB_LEASE_S"] = str(lease)
    c.env.update(env or {})
    Path(c.storage).mkdir(parents=True, exist_ok=True)
    c.logs.mkdir(parents=True, exist_ok=True)
    c.save()
    t0 = time.monotonic()
    try:
        _start_postgres(c)
        _start_redis(c)
        # Start every replica and worker at once (they import torch in parallel), then wait.
        apis = [start_replica(c, "api", f"api-{i + 1}", wait=False) for i in range(api)]
        for i in range(workers):
            start_replica(c, "worker", f"worker-{i + 1}", wait=False)
        wait_healthy(c, apis, timeout)
        _start_nginx(c)
        left = max(30.0, timeout - (time.monotonic() - t0))
        if workers:
            wait_ready(c, left)
        else:  # /api/ready needs a live worker: with none, the API answering is all
            _wait_for("/api/health through nginx",
                      lambda: http_get(c.url + "/api/health", 5)[0] == 200, apis, left)
    except BaseException:
        log("start failed; stopping what was started")
        with contextlib.suppress(Exception):
            down(c, timeout=10)
        raise
    c.state = "up"
    c.save()
    log(f"up in {time.monotonic() - t0:.1f} s: {c.url} ({api} API replica(s), "
        f"{workers} worker(s))")
    return c


def start_services(directory: str | Path, *, postgres: bool = True,
                   redis: bool = True) -> Cluster:
    """Only the engines (a private PostgreSQL and / or Redis on loopback), no replicas and no
    nginx: the test suite runs its database and queue tests on them. `stop_services` ends
    them; `database_url` / `queue_url` say where they are."""
    pg_bin = find_pg_bin()
    if postgres and pg_bin is None:
        raise ClusterError("PostgreSQL's server binaries are not installed "
                           "(apt-get install postgresql)")
    if redis and shutil.which("redis-server") is None:
        raise ClusterError("redis-server is not installed (apt-get install redis-server)")
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    c = Cluster(dir=d, storage=str(d / "storage"))
    c.logs.mkdir(parents=True, exist_ok=True)
    try:
        if postgres:
            _start_postgres(c)
        if redis:
            _start_redis(c)
    except BaseException:
        with contextlib.suppress(Exception):
            stop_services(c)
        raise
    c.state = "up"
    c.save()
    return c


def stop_services(c: Cluster, timeout: float = 30.0) -> None:
    _stop_redis(c, 10)
    _stop_postgres(c, timeout)
    c.state = "down"
    c.save()


def wait_ready(c: Cluster, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until GET /api/ready through nginx answers 200; returns its JSON."""
    answer: dict[str, Any] = {}

    def ready() -> bool:
        status, body = http_get(c.url + "/api/ready", 5)
        if status == 200:
            answer.update(json.loads(body))
            return True
        return False

    watched = [p for p in c.processes if p.role in ("postgres", "redis", "nginx", "worker")]
    _wait_for("/api/ready through nginx", ready, watched, timeout, interval=0.5)
    return answer


def down(target: Cluster | str | Path, *, timeout: float = 30.0) -> dict[str, Any]:
    """Stop every process of the cluster and remove PostgreSQL's temporary directory."""
    c = target if isinstance(target, Cluster) else load(target)
    for p in c.by_role("nginx"):
        _signal(p, signal.SIGQUIT)  # graceful: finish the requests in flight
    for p in _wait_gone(c.by_role("nginx"), 10):
        _signal(p, signal.SIGKILL)
    # Workers stop gracefully (a running job checkpoints and goes back to the queue), so
    # the database and the queue stay up until they are gone.
    _stop_group(c.by_role("api") + c.by_role("worker"), timeout)
    _stop_redis(c, 10)
    _stop_postgres(c, timeout)
    for p in c.processes:
        child = _CHILDREN.pop(p.pid, None) if p.pid else None
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
    c.state = "down"
    c.save()
    still = [p.name for p in c.processes if proc_alive(p)]
    if still:
        raise ClusterError(f"still running after down: {', '.join(still)}")
    log(f"down: {c.dir}")
    return {"dir": str(c.dir), "state": "down", "logs": str(c.logs)}


def status(target: Cluster | str | Path) -> dict[str, Any]:
    c = target if isinstance(target, Cluster) else load(target)
    procs = [{"role": p.role, "name": p.name, "pid": p.pid, "port": p.port,
              "alive": proc_alive(p), "log": p.log} for p in c.processes]
    out: dict[str, Any] = {"dir": str(c.dir), "state": c.state, "url": c.url,
                           "processes": procs, "upstreams": c.nginx.get("upstreams", [])}
    if c.by_role("nginx") and proc_alive(c.by_role("nginx")[0]):
        code, body = http_get(c.url + "/api/ready", 5)
        try:
            out["ready"] = {"status": code, **json.loads(body)}
        except ValueError:
            out["ready"] = {"status": code}
    out["all_alive"] = all(p["alive"] for p in procs)
    return out


# -- command line -----------------------------------------------------------------------------
def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"--env wants KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="local-cluster", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the cluster; prints its JSON")
    u.add_argument("--dir", required=True, type=Path, help="cluster directory")
    u.add_argument("--api", type=int, default=2, help="API replicas (default 2)")
    u.add_argument("--workers", type=int, default=2, help="job workers (default 2)")
    u.add_argument("--port", type=int, default=None, help="nginx port (default: a free one)")
    u.add_argument("--lease", type=float, default=None,
                   help="job lease seconds (POLYCHROME_JOB_LEASE_S)")
    u.add_argument("--env", type=_env_pair, action="append", default=[], metavar="K=V",
                   help="extra environment for the API replicas and workers (repeatable)")
    u.add_argument("--timeout", type=float, default=240.0,
                   help="seconds to wait for readiness (default 240)")
    for name, helptext in (("status", "print the processes and readiness"),
                           ("down", "stop everything")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--dir", required=True, type=Path, help="cluster directory")
        if name == "down":
            s.add_argument("--timeout", type=float, default=30.0,
                           help="seconds before SIGKILL (default 30)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "up":
            c = up(args.dir, api=args.api, workers=args.workers, port=args.port,
                   lease=args.lease, env=dict(args.env), timeout=args.timeout)
            out = c.to_json()
        elif args.command == "down":
            out = down(args.dir, timeout=args.timeout)
        else:
            out = status(args.dir)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(out))
    if args.command == "status" and not out["all_alive"]:
        return 1
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... status | head` ends quietly
    sys.exit(main())
