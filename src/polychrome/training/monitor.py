"""Run monitoring: metrics.jsonl, TensorBoard, sample grids, progress, collapse warning.

Only rank 0 builds a `Monitor`; everything here writes into the run dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..imageio import encode_png
from ..utils.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
EVENTS_DIR = "events"
SAMPLES_DIR = "samples"
# The losses progress shows (the first few a trainer logs), by the names people read.
LOSS_LABELS = {"loss_d": "D", "loss_g": "G", "l1": "L1", "cyc": "cycle", "sty": "style",
               "idt": "identity"}
PROGRESS_LOSSES = 4
BAR_REFRESH_SECONDS = 0.5  # losses on the bar: read back at most this often


def tile_images(samples: torch.Tensor, cols: int, padding: int = 2) -> np.ndarray:
    """(N, 3, R, R) float in [-1, 1] -> (H, W, 3) uint8 grid, `cols` per row, white gaps."""
    n, c, h, w = samples.shape
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    x = ((samples.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    if c == 1:
        x = x.expand(n, 3, h, w)
    grid = torch.full((3, rows * (h + padding) + padding, cols * (w + padding) + padding), 255,
                      dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i, :3]
    return grid.permute(1, 2, 0).contiguous().numpy()


def diversity(samples: torch.Tensor) -> float:
    """Mean pairwise L2 distance between samples (N, ...) — falls when G collapses."""
    flat = samples.detach().float().reshape(samples.shape[0], -1).cpu()
    if flat.shape[0] < 2:
        return 0.0
    return float(torch.pdist(flat).mean())


def _floats(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


class Monitor:
    """metrics.jsonl + TensorBoard + sample PNGs + progress for one run (rank 0).

    Progress: on a terminal a bar (step/total, img/s, ETA, the main losses); elsewhere
    (a pipe, a log file, a job worker) a log line every `progress_every_s` seconds,
    whatever the step rate (0: every step).
    """

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, show_bar: bool,
                 images_per_step: int = 1, progress_every_s: float = 10.0,
                 collapse_ratio: float = 0.5, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.samples_dir = self.run_dir / SAMPLES_DIR
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_NAME
        self.total_steps = total_steps
        self.collapse_ratio = collapse_ratio
        self.diversity_max = 0.0
        self.collapse_warnings = 0
        rerun = self.metrics_path.exists()  # a resumed (or restarted) run
        self._truncate_metrics(start_step)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run logged after the step we resume from
            self.tb = SummaryWriter(log_dir=str(self.run_dir / EVENTS_DIR),
                                    purge_step=start_step if rerun else None)
        self._t0 = time.monotonic()
        self._start_step = start_step
        self.images_per_step = images_per_step
        self.progress_every_s = progress_every_s
        self._shown = (self._t0, start_step)  # (time, step) of the last line or bar refresh
        self._rate = 0.0  # img/s over the last display interval
        self._exit = contextlib.ExitStack()
        self.bar = None
        if show_bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, file=sys.stderr,
                            leave=False, **_bar_width(),
                            bar_format="step {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}| "
                                       "[{elapsed}{postfix}]")
            # log records (eval results, warnings) print above the bar, not through it
            self._exit.enter_context(logging_redirect_tqdm())

    def _truncate_metrics(self, start_step: int) -> None:
        """On resume, drop lines a killed run wrote after the checkpoint we resume from."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                step = int(json.loads(line).get("step", 0))
                # from scratch (no checkpoint yet): nothing of the killed attempt stays
                if step <= start_step and start_step > 0:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue  # a torn last line from a kill
        atomic_write_text(self.metrics_path, "".join(k + "\n" for k in kept))

    def _write(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()

    # -- events --------------------------------------------------------------------------
    def log_step(self, step: int, losses: dict[str, Any], lrs: dict[str, float],
                 aug_p: float, images_per_second: float) -> dict[str, float]:
        vals = _floats(losses)
        elapsed = time.monotonic() - self._t0
        self._write({"step": step, "time": round(elapsed, 3), "losses": vals, "lr": lrs,
                     "aug_p": aug_p, "img_per_sec": round(images_per_second, 2)})
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            for k, v in lrs.items():
                self.tb.add_scalar(f"lr/{k}", v, step)
            self.tb.add_scalar("aug/p", aug_p, step)
            self.tb.add_scalar("perf/img_per_sec", images_per_second, step)
        return vals

    def advance(self, step: int, logs: dict[str, Any]) -> None:
        """After each step (the step's own losses, tensors or numbers): bar or log line."""
        now = time.monotonic()
        last_t, last_step = self._shown
        if self.bar is not None:
            self.bar.update(step - self.bar.n)  # redraws at most every 0.1 s itself
            if now - last_t < BAR_REFRESH_SECONDS and step < self.total_steps:
                return
        elif now - last_t < self.progress_every_s and step < self.total_steps:
            return
        if now > last_t and step > last_step:
            self._rate = (step - last_step) * self.images_per_step / (now - last_t)
        self._shown = (now, step)
        done, elapsed = step - self._start_step, now - self._t0
        eta = _fmt_eta((self.total_steps - step) * elapsed / done if done > 0 else math.nan)
        losses = loss_summary(logs)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self._rate:.1f} img/s, ETA {eta}"
                                     + (f", {losses}" if losses else ""), refresh=True)
        else:
            log.info("step %d/%d (%d%%) %.1f img/s ETA %s%s", step, self.total_steps,
                     100 * step // max(self.total_steps, 1), self._rate, eta,
                     f" | {losses}" if losses else "")

    def log_eval(self, step: int, metrics: dict[str, Any]) -> None:
        vals = _floats(metrics)
        self._write({"step": step, "time": round(time.monotonic() - self._t0, 3), "eval": vals})
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(f"eval/{k}", v, step)
        log.info("step %d eval %s", step, " ".join(f"{k}={v:.4g}" for k, v in vals.items()))

    def log_samples(self, step: int, image: np.ndarray, samples: torch.Tensor) -> Path:
        """Write samples/step-N.png, add it to TensorBoard, check diversity for collapse."""
        path = self.samples_dir / f"step-{step:06d}.png"
        atomic_write_bytes(path, encode_png(image))
        div = diversity(samples)
        collapse = self.diversity_max > 0 and div < self.collapse_ratio * self.diversity_max
        self.diversity_max = max(self.diversity_max, div)
        if collapse:
            self.collapse_warnings += 1
            log.warning("possible mode collapse at step %d: sample diversity %.4g fell below "
                        "%.0f%% of its running max %.4g", step, div, 100 * self.collapse_ratio,
                        self.diversity_max)
        self._write({"step": step, "time": round(time.monotonic() - self._t0, 3),
                     "samples": str(path.relative_to(self.run_dir)), "diversity": div,
                     "collapse_warning": collapse})
        log.info("step %d: sample grid %s", step, path)
        if self.tb is not None:
            self.tb.add_image("samples", image, step, dataformats="HWC")
            self.tb.add_scalar("samples/diversity", div, step)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"diversity_max": self.diversity_max, "collapse_warnings": self.collapse_warnings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.diversity_max = float(state.get("diversity_max", 0.0))
        self.collapse_warnings = int(state.get("collapse_warnings", 0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._exit.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if not self._metrics.closed:
            self._metrics.close()


def _bar_width() -> dict[str, Any]:
    """Follow the terminal's size; one that reports none (0 x 0: some containers and
    recorders) gets 100 columns, since tqdm draws nothing in a terminal of no rows."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": size.columns or 100, "nrows": size.lines or 24}


def loss_summary(logs: dict[str, Any], limit: int = PROGRESS_LOSSES) -> str:
    """The main losses, readable: "D 0.693  G 0.702  cycle 0.31" (known names first)."""
    keys = [k for k in LOSS_LABELS if k in logs][:limit]
    return "  ".join(f"{LOSS_LABELS[k]} {float(logs[k]):.3g}" for k in keys)


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
