"""`polychrome serve` (REST API + job workers) and `polychrome worker` (jobs only)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import click

from ..errors import ConfigError
from .common import emit_json, json_option
from .main import app

log = logging.getLogger("polychrome.serve")


class WorkerSupervisor:
    """Keeps N `polychrome worker` processes alive; a dead one is started again.

    A restarted worker finds the job its predecessor held and resumes it from its
    checkpoint. A worker that died while this supervisor lives is the job's doing (it ran
    out of memory, say): the job is blamed for it (`failures`) before a new worker starts.

    One supervisor per home runs workers: it holds `<home>/workers.lock` for its lifetime
    (the kernel releases it however the process ends). A second `serve` on the same home
    serves the API only and takes the workers over when the first one is gone. Workers die
    with their supervisor (parent-death signal), so a `serve` killed with -9 leaves none
    behind. All of this happens on one thread, the one that started the workers: Linux
    signals a child when the thread that forked it exits.
    """

    LOCK_NAME = "workers.lock"

    def __init__(self, n: int, verbose: bool = False):
        self.n = n
        self.verbose = verbose
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.stop_timeout = 60.0
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def _spawn(self, i: int) -> None:
        cmd = [sys.executable, "-m", "polychrome"]
        if self.verbose:
            cmd.append("-v")
        cmd.append("worker")
        from ..serving.jobs.worker import SUPERVISOR_PID_ENV

        env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}
        # Own process group: Ctrl-C in the terminal reaches `serve`, which then stops
        # the workers gracefully (checkpoint first) instead of killing them mid-step.
        self.procs[i] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        log.info("started job worker %d (pid %d)", i, self.procs[i].pid)

    def _acquire(self, *, announce: bool) -> bool:
        """Take the home's worker lock (never waits); False while another supervisor has it."""
        import fcntl

        from ..settings import get_settings

        path = get_settings().home / self.LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if announce:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
                log.warning("another `polychrome serve` (pid %s) runs the job workers of %s: "
                            "this one serves the API only and starts no workers (it takes "
                            "them over if that one stops)", holder, path.parent)
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd
        return True

    def start(self) -> None:
        if self.n > 0:
            self._thread.start()

    def _run(self) -> None:
        try:
            first = True
            while True:
                try:
                    self._tick(first)
                except Exception:  # e.g. a failed fork: try again in a second
                    log.exception("job worker supervision failed; trying again")
                first = False
                if self._stop.wait(1.0):
                    break
        finally:
            self._stop_workers(self.stop_timeout)
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    def _tick(self, first: bool) -> None:
        """Hold the home's lock (or try to take it over), then keep every worker running."""
        if self._lock_fd is None:
            if not self._acquire(announce=first):
                return
            if not first:
                log.info("the other supervisor is gone: starting %d job worker(s)", self.n)
        for i, p in enumerate(self.procs):
            if self._stop.is_set():
                return
            if p is not None and p.poll() is None:
                continue
            if p is not None:
                log.warning("job worker %d (pid %d) exited with %s; restarting it",
                            i, p.pid, p.returncode)
                self.procs[i] = None
                self._blame(p.pid)
            self._spawn(i)

    @staticmethod
    def _blame(pid: int) -> None:
        """This supervisor outlived worker `pid`: the jobs it held count the death."""
        try:
            from ..persistence import jobs as store
            from ..serving.jobs.queue import enqueue_job

            for job_id in store.worker_died(pid):
                enqueue_job(job_id)
        except Exception:  # a busy database: the workers' own sweep returns the jobs later
            log.warning("could not return the jobs of worker pid %d to the queue", pid,
                        exc_info=True)

    def _stop_workers(self, timeout: float) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()  # graceful: the job checkpoints and goes back to the queue
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("job worker pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.wait()

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_timeout = timeout
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 10.0)


@app.command("serve")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1: loopback only).")
@click.option("--port", type=int, default=None, help="Port (default 8765).")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Job worker processes to run beside the API (default 1; 0 = none).")
@click.option("--no-batching", is_flag=True, help="Serve each generate request on its own.")
@click.option("--insecure-public", is_flag=True, default=None,
              help="Serve a non-loopback --host without API keys (setting insecure_public): "
                   "anyone who can reach the port can use the API.")
@click.pass_context
def serve_cmd(ctx: click.Context, host: str | None, port: int | None, workers: int | None,
              no_batching: bool, insecure_public: bool | None) -> None:
    """Run the REST API (OpenAPI at /openapi.json, docs at /docs) and job workers."""
    import uvicorn

    from ..serving.app import create_app
    from ..settings import get_settings

    settings = get_settings()
    host = host or settings.host
    port = settings.port if port is None else port
    n_workers = settings.workers if workers is None else workers
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    from ..serving.security import guarded_h11_protocol, is_loopback

    if not is_loopback(host) and not settings.api_key_set:
        if not (insecure_public or settings.insecure_public):
            raise ConfigError(f"refusing to serve on {host} without API keys: anyone who can "
                              "reach it could use it; set POLYCHROME_API_KEYS, or pass "
                              "--insecure-public (POLYCHROME_INSECURE_PUBLIC=1) to mean it")
        log.warning("binding to %s without API keys: anyone who can reach it can use it "
                    "(set POLYCHROME_API_KEYS)", host)
    settings = settings.model_copy(update={"host": host, "port": port})  # the bound address
    verbose = bool(ctx.find_root().params.get("verbose"))
    if settings.inference_threads > 0:
        import torch

        torch.set_num_threads(settings.inference_threads)
    api = create_app(settings, batching=False if no_batching else None)
    supervisor = WorkerSupervisor(n_workers, verbose=verbose)
    # uvicorn re-raises SIGTERM once it has shut down; with this handler that becomes
    # SystemExit, so the `finally` below still stops the workers gracefully.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    supervisor.start()
    try:
        # h11 with header and discarded-body read timeouts (uvicorn has none of its own).
        uvicorn.run(api, host=host, port=port, log_level="debug" if verbose else "info",
                    access_log=verbose, timeout_graceful_shutdown=10,
                    http=guarded_h11_protocol(settings.header_timeout_s,
                                              settings.body_timeout_s))
    finally:
        supervisor.stop()


@app.command("worker")
@click.option("--max-jobs", type=click.IntRange(1), default=None,
              help="Exit after this many jobs (default: run until stopped).")
@click.option("--idle-exit", type=float, default=None,
              help="Exit after this many seconds without work.")
@json_option
def worker_cmd(max_jobs: int | None, idle_exit: float | None, as_json: bool) -> None:
    """Run queued jobs (import / train / eval) until stopped; SIGTERM checkpoints first."""
    from ..serving.jobs.worker import Worker, tie_to_supervisor
    from ..settings import get_settings

    tie_to_supervisor()  # started by `serve`: stop when it dies
    # Import the job code now, not when the first job arrives (seconds on a busy machine).
    from ..persistence import datasets as _datasets  # noqa: F401
    from ..training import train as _train  # noqa: F401

    # Scratch files of jobs (and of the processes they start, e.g. torchrun's launcher)
    # stay in the storage root's scratch space, never in the system's /tmp outside it.
    settings = get_settings()
    settings.ensure_dirs()
    os.environ["TMPDIR"] = tempfile.tempdir = str(settings.tmp_dir)
    w = Worker()
    w.install_signal_handlers()
    log.info("worker pid %d, home %s", os.getpid(), get_settings().home)
    done = w.run(max_jobs=max_jobs, idle_exit_s=idle_exit)
    if as_json:
        emit_json({"worker": w.id, "jobs": done})
    else:
        click.echo(f"worker {w.id}: ran {done} job(s)", err=True)
