"""A time budget for a training run: the loop's `should_stop` hook.

    budget = TimeBudget(45 * 60, clock="cpu")
    train(cfg, run_dir=..., should_stop=budget)   # stops (and checkpoints) when it runs out

`clock="wall"` counts wall-clock seconds; `clock="cpu"` counts this process's CPU time
(every thread), which is the fair measure on a shared machine: time the process waits
for a core is not charged. The clock starts at the first poll (just before step 0), so
data loading and model setup are not charged.
"""

from __future__ import annotations

import logging
import time

from ..errors import ConfigError

CLOCKS = ("wall", "cpu")


class TimeBudget:
    """True once `seconds` of the chosen clock have passed since the first call.

    Polled once per step by the loop: `steps` is the number of steps run so far. Logs
    progress to `logger` every `log_every_s` wall seconds (0 = never).
    """

    def __init__(self, seconds: float, clock: str = "wall", *, name: str = "run",
                 logger: logging.Logger | None = None, log_every_s: float = 60.0):
        if clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {CLOCKS}, got {clock!r}")
        if seconds <= 0:
            raise ConfigError(f"a time budget must be > 0 seconds, got {seconds}")
        self.seconds, self.clock, self.name = float(seconds), clock, name
        self.log, self.log_every_s = logger, float(log_every_s)
        self.polls = 0
        self.start: tuple[float, float] | None = None  # (wall, CPU) at the first poll
        self.end: tuple[float, float] | None = None
        self._last_log_at = 0.0

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def __call__(self) -> bool:
        self.polls += 1
        now = self._now()
        if self.start is None:
            self.start = now
            self._last_log_at = now[0]
        self.end = now
        used = self.used()[0 if self.clock == "wall" else 1]
        if self.log is not None and self.log_every_s > 0 \
                and now[0] - self._last_log_at >= self.log_every_s:
            self._last_log_at = now[0]
            self.log.info("%s: %d steps, %.1f / %.1f %s-min", self.name, self.steps, used / 60,
                          self.seconds / 60, self.clock)
        return used >= self.seconds

    @property
    def steps(self) -> int:
        return max(0, self.polls - 1)

    def used(self) -> tuple[float, float]:
        """(wall, CPU) seconds between the first and the last poll."""
        if self.start is None or self.end is None:
            return 0.0, 0.0
        return self.end[0] - self.start[0], self.end[1] - self.start[1]
