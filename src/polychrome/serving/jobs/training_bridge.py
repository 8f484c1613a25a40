"""Train and eval jobs on top of polychrome.training / polychrome.metrics.

A train job owns a run directory chosen when it was queued. Any later attempt
(after a kill -9, a restart, a graceful shutdown) resumes that directory from
its latest checkpoint with `train(resume=run_dir)` -- the CLI's
`polychrome train --resume RUN_DIR` -- so a job is never restarted from scratch.

A job with `nproc` > 1 trains in that many processes on this worker's machine: the
worker starts torchrun's launcher (`torch.distributed.run --standalone`) on this
module, whose `rank` entry point runs `train()` in each process exactly as the
single-process path does (same run dir, same resume). The worker follows the run
through the metrics log rank 0 writes, asks the ranks to checkpoint and stop through
a stop file (then SIGTERM, then SIGKILL if they do not), and registers the model
itself afterwards. The launcher and the ranks die with the worker (Linux parent-death
signal), so a kill -9 of the worker leaves nothing training; the next attempt resumes
from the last checkpoint like any other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ...persistence.db import session_scope
from ...persistence.models import ModelVersion
from ...settings import get_settings

if TYPE_CHECKING:
    from .runners import JobContext

log = logging.getLogger(__name__)


def _has_run(run_dir: Path) -> bool:
    from ...training.runs import CHECKPOINTS_DIR, CONFIG_NAME

    return (run_dir / CONFIG_NAME).is_file() or (run_dir / CHECKPOINTS_DIR).is_dir()


def _registered_from(run_dir: Path) -> dict[str, Any] | None:
    """The model version an earlier attempt already registered from this run, if any."""
    with session_scope() as s:
        row = s.scalars(select(ModelVersion).where(ModelVersion.source_run == get_settings().to_stored(run_dir))
                        .order_by(ModelVersion.version.desc())).first()
        if row is None:
            return None
        return {"name": row.name, "version": row.version, "arch": row.arch,
                "family": row.family, "styles": list(row.styles or [])}


def _model_name(cfg: Any) -> str:
    from ...training.runs import split_dataset_spec

    return cfg.name or f"{split_dataset_spec(cfg.dataset, None)[0]}-{cfg.model}"


def run(ctx: JobContext) -> dict[str, Any]:
    from ...training import TrainConfig, register_run_model, train
    from .runners import JobCancelled

    run_dir = get_settings().stored(ctx.job["run_dir"])  # kept relative to the storage root
    resuming = _has_run(run_dir)
    ctx.set(run_dir=get_settings().to_stored(run_dir))
    common = {"on_progress": ctx.on_progress, "should_stop": ctx.should_stop,
              "show_progress": False}
    nproc = int(ctx.job["params"].get("nproc") or 1)
    if resuming:
        log.info("job %s: resuming %s (attempt %d)", ctx.id, run_dir, ctx.job["attempts"])
    if nproc > 1:
        out = _train_processes(ctx, run_dir, nproc, resuming)
    elif resuming:
        out = train(resume=run_dir, **common).to_json()
    else:
        cfg = TrainConfig.from_dict(ctx.job["params"]["config"])
        out = train(cfg, run_dir=run_dir, **common).to_json()
    if out["stopped"]:
        raise JobCancelled()
    from ...training.runs import read_run_config

    cfg, _ = read_run_config(run_dir)
    model = _registered_from(run_dir)
    if model is None:
        model = register_run_model(run_dir, _model_name(cfg))
    out["resumed"] = resuming
    out["model"] = model
    return out


def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Evaluate a registered model against a dataset; metrics also go on the model card."""
    p = ctx.job["params"]
    from ...metrics import evaluate_model
    kwargs: dict[str, Any] = {k: p[k] for k in ("n", "extractor", "evaluator_steps")
                              if p.get(k) is not None}
    if p.get("metrics"):
        kwargs["metrics"] = tuple(p["metrics"])
    ctx.on_progress(0, 1)
    result = evaluate_model(p["model"], p["dataset"], **kwargs)  # also updates the model card
    ctx.on_progress(1, 1)
    return result


# -- several processes on this worker --------------------------------------------------------
_WORKER_PID_ENV = "POLYCHROME_JOB_WORKER_PID"  # the launcher dies with this process
_LAUNCHER_PID_ENV = "POLYCHROME_JOB_LAUNCHER_PID"  # the ranks die with this one
_POLL_S = 0.2
_STOP_GRACE_S = 120.0  # after the stop file: then SIGTERM to the launcher
_KILL_GRACE_S = 45.0  # after SIGTERM (torchrun itself gives the ranks 30 s): then SIGKILL
_MODULE = "polychrome.serving.jobs.training_bridge"


def _train_processes(ctx: JobContext, run_dir: Path, nproc: int,
                     resuming: bool) -> dict[str, Any]:
    """Train the job in `nproc` processes under torchrun; returns rank 0's result JSON."""
    from ...errors import PolychromeError, TrainingError
    from ...settings import get_settings
    from ...training import TrainConfig
    from ...training.checkpoint import STATE_NAME, latest_checkpoint
    from ...training.runs import CHECKPOINTS_DIR, read_run_config
    from .runners import JobCancelled

    work = get_settings().tmp_dir / f"job-{ctx.id}"  # config, stop flag, result, errors
    shutil.rmtree(work, ignore_errors=True)  # a killed attempt's leftovers (a stale stop flag)
    work.mkdir(parents=True)
    stop_file, result_file = work / "stop", work / "result.json"
    args = ["--run-dir", str(run_dir), "--stop-file", str(stop_file),
            "--result", str(result_file), "--errors", str(work)]
    first_step = 0
    if resuming:
        cfg, ckpt = read_run_config(run_dir)
        if ckpt is not None:
            first_step = int(json.loads((ckpt / STATE_NAME).read_text())["step"])
        args.append("--resume")
    else:
        cfg = TrainConfig.from_dict(ctx.job["params"]["config"])
        (work / "config.json").write_text(json.dumps(ctx.job["params"]["config"]))
        args += ["--config", str(work / "config.json")]
    env = {**os.environ, _WORKER_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", _MODULE, "launch", "--nproc", str(nproc), *args]
    log.info("job %s: training in %d processes (%s)", ctx.id, nproc, run_dir)
    # Own session: a terminal's Ctrl-C reaches the worker, which stops the run in order.
    # Their stdout goes to stderr: the worker's stdout may be its one `--json` answer.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=2, env=env,
                            start_new_session=True)
    tail = _MetricsTail(run_dir / _metrics_name(), after_step=first_step)
    stop_at: float | None = None
    term_at: float | None = None
    try:
        while proc.poll() is None:
            for step, logs in tail.read():
                ctx.on_progress(step, cfg.steps, logs)
            now = time.monotonic()
            if stop_at is None and ctx.should_stop():
                log.info("job %s: asking the training processes to checkpoint and stop", ctx.id)
                stop_file.touch()
                stop_at = now
            elif stop_at is not None and term_at is None and now - stop_at > _STOP_GRACE_S:
                log.warning("job %s: training processes still running; SIGTERM", ctx.id)
                proc.send_signal(signal.SIGTERM)
                term_at = now
            elif term_at is not None and now - term_at > _KILL_GRACE_S:
                log.error("job %s: training processes ignore SIGTERM; killing them", ctx.id)
                proc.kill()  # the ranks follow (parent-death signal)
                term_at = float("inf")
            time.sleep(_POLL_S)
        for step, logs in tail.read():
            ctx.on_progress(step, cfg.steps, logs)
    finally:
        tail.close()
        if proc.poll() is None:  # the worker itself is failing: never leave ranks behind
            proc.kill()
            proc.wait()
    result = json.loads(result_file.read_text()) if result_file.is_file() else None
    # The first rank's own error (a rank that only saw its peer vanish reports internal_error)
    errors = sorted((json.loads(p.read_text()) | {"rank": int(p.stem.split("-")[1])}
                     for p in work.glob("error-*.json")),
                    key=lambda e: (e.get("code") == "internal_error", e["rank"]))
    shutil.rmtree(work, ignore_errors=True)
    if result is not None and proc.returncode == 0:
        ctx.on_progress(result["steps"], result["total_steps"], result.get("final") or {})
        return result
    if stop_at is not None:  # stopped on request (the last checkpoint is in the run dir)
        has_ckpt = latest_checkpoint(run_dir / CHECKPOINTS_DIR) is not None
        log.info("job %s: training processes stopped (exit %s; checkpoint: %s)", ctx.id,
                 proc.returncode, has_ckpt)
        raise JobCancelled()
    if errors:
        raise PolychromeError(errors[0]["message"], code=errors[0].get("code") or "training_error")
    raise TrainingError(f"the {nproc} training processes failed (launcher exit code "
                        f"{proc.returncode}); see the worker log", code="train_failed")


def _metrics_name() -> str:
    from ...training.monitor import METRICS_NAME

    return METRICS_NAME


class _MetricsTail:
    """New step records of a run's metrics.jsonl (rank 0 writes it), across rewrites.

    On resume the monitor rewrites the file without the lines past the checkpoint
    (a new file): the tail then starts over, and steps up to `after_step` (the
    checkpoint this attempt resumed from) are skipped, as are lines already seen.
    """

    def __init__(self, path: Path, after_step: int = 0):
        self.path, self.last_step = path, after_step
        self._fh: Any = None
        self._buf = ""

    def read(self) -> list[tuple[int, dict[str, Any]]]:
        try:
            ino = self.path.stat().st_ino
        except OSError:
            return []
        if self._fh is None or os.fstat(self._fh.fileno()).st_ino != ino:
            self.close()
            try:
                self._fh = open(self.path, encoding="utf-8")  # noqa: SIM115
            except OSError:
                return []
        self._buf += self._fh.read()
        lines, _, self._buf = self._buf.rpartition("\n")
        out = []
        for line in lines.splitlines():
            try:
                rec = json.loads(line)
                step = int(rec["step"])
            except (ValueError, KeyError, TypeError):
                continue
            if "losses" in rec and step > self.last_step:
                self.last_step = step
                out.append((step, dict(rec["losses"])))
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._buf = None, ""


def _die_with(pid_env: str) -> None:
    """Linux: get SIGKILL when the parent (whose pid is in `pid_env`) dies; exit if it
    already has. Elsewhere nothing (the worker still kills the launcher on its way out)."""
    expected = int(os.environ.get(pid_env) or 0)
    if not sys.platform.startswith("linux") or not expected:
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
        log.warning("could not tie this process to its parent's life (errno %d)",
                    ctypes.get_errno())
        return
    if os.getppid() != expected:  # the parent died before the line above
        os._exit(1)


def _launch(nproc: int, rank_args: list[str]) -> int:
    """The launcher: torchrun's own entry point, in this process (dies with the worker)."""
    from torch.distributed.run import main as torchrun

    _die_with(_WORKER_PID_ENV)
    os.environ[_LAUNCHER_PID_ENV] = str(os.getpid())  # the ranks inherit it
    try:
        torchrun(["--standalone", "--nproc_per_node", str(nproc), "-m", _MODULE, *rank_args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except Exception as e:  # ChildFailedError: a rank failed (its error file says why)
        log.error("training processes failed: %s", type(e).__name__)
        return 1
    return 0


def _rank(opts: Any) -> int:
    """One rank: train() with a stop flag (stop file or SIGTERM), like `polychrome train`."""
    from ...errors import PolychromeError
    from ...training import TrainConfig, train
    from ...training.distributed import env_ranks
    from ...utils.atomic import atomic_write_text

    _die_with(_LAUNCHER_PID_ENV)
    rank = env_ranks()[0]
    stop = [False]

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("rank %d: signal %d: checkpointing and stopping", rank, signum)
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop_file = Path(opts.stop_file)
    common: dict[str, Any] = {"should_stop": lambda: stop[0] or stop_file.exists(),
                              "show_progress": False}
    try:
        if opts.resume:
            result = train(resume=opts.run_dir, **common)
        else:
            cfg = TrainConfig.from_dict(json.loads(Path(opts.config).read_text()))
            result = train(cfg, run_dir=opts.run_dir, **common)
    except PolychromeError as e:
        log.error("rank %d: %s", rank, e)
        error = {"code": e.code, "message": str(e)}
    except Exception as e:  # a bug, or a peer that vanished mid-collective
        log.exception("rank %d crashed", rank)
        error = {"code": "internal_error", "message": f"{type(e).__name__}: {e}"}
    else:
        if rank == 0:
            atomic_write_text(Path(opts.result), json.dumps(result.to_json()))
        return 0
    atomic_write_text(Path(opts.errors) / f"error-{rank}.json", json.dumps(error))
    return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m polychrome.serving.jobs.training_bridge launch|rank ...` (worker use only)."""
    import argparse

    from ...cli.common import setup_logging

    parser = argparse.ArgumentParser(prog=_MODULE)
    parser.add_argument("mode", choices=("launch", "rank"))
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--errors", required=True)
    argv = sys.argv[1:] if argv is None else argv
    opts = parser.parse_args(argv)
    setup_logging()
    if opts.mode == "launch":
        rank_args = list(argv[1:])
        if "--nproc" in rank_args:
            i = rank_args.index("--nproc")
            del rank_args[i:i + 2]
        return _launch(opts.nproc, ["rank", *rank_args])
    return _rank(opts)


if __name__ == "__main__":
    sys.exit(main())
