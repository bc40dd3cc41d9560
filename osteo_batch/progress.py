"""Progress of long stages: log lines anywhere, progress bars on a terminal.

Why through ``logging``: the same call reports from a plain Python loop, a
Prefect task (its logs carry the ``osteo_batch`` logger when
``PREFECT_LOGGING_EXTRA_LOGGERS`` names it, see ``flows/env.py``), a shard
process or a Ray worker, with no callback to thread through. Each update is a
DEBUG record carrying the numbers; every ``every_s`` seconds and at the end an
INFO line says them in words. The CLI turns the records into bars
(:func:`bars`). Records hold counts and rates only, never patient data.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

LOGGER = "osteo_batch.progress"


@dataclass(frozen=True)
class Update:
    label: str
    done: int
    total: int
    unit: str
    rate: float  # units per second since the start
    eta_s: float | None

    def line(self) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = f", about {_duration(self.eta_s)} left" if self.eta_s is not None and self.done < self.total else ""
        return f"{self.label}: {self.done}/{self.total} {self.unit}{pct}, {self.rate:.1f} {self.unit}/s{eta}"


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class ProgressLog:
    """Call with the count done so far; it logs as the module docstring says."""

    def __init__(self, label: str, total: int, *, unit: str = "images", every_s: float = 15.0):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.log = logging.getLogger(LOGGER)
        self._emit(0, logging.DEBUG)

    def _emit(self, done: int, level: int) -> None:
        if not self.log.isEnabledFor(level):  # called per batch: build nothing nobody reads
            return
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else None
        u = Update(self.label, done, self.total, self.unit, rate, eta)
        self.log.log(level, "%s", u.line(), extra={"osteo_progress": u})

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        now = time.monotonic()
        finished = done >= self.total
        if finished or now - self.last_line >= self.every_s:
            self.last_line = now
            self._emit(done, logging.INFO)
        else:
            self._emit(done, logging.DEBUG)


class _BarHandler(logging.Handler):
    """Renders progress records as rich progress bars (one per label)."""

    def __init__(self, progress):
        super().__init__(logging.DEBUG)
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        u: Update | None = getattr(record, "osteo_progress", None)
        if u is None:
            return
        if u.label not in self.tasks:
            self.tasks[u.label] = self.progress.add_task(u.label, total=u.total or None, unit=u.unit)
        self.progress.update(self.tasks[u.label], completed=u.done, total=u.total or None,
                             description=f"{u.label} [{u.rate:.1f} {u.unit}/s]")


@contextmanager
def bars(enabled: bool | None = None) -> Iterator[None]:
    """Show progress: bars (rate, time left) on a terminal, else the INFO lines on stderr."""
    log = logging.getLogger(LOGGER)
    enabled = sys.stderr.isatty() if enabled is None else enabled
    old_level, old_propagate = log.level, log.propagate
    if enabled:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeRemainingColumn)

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TaskProgressColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        handler: logging.Handler = _BarHandler(progress)
        log.setLevel(logging.DEBUG)
        log.propagate = False  # the bar says it; no duplicate lines
        progress.start()
    else:
        progress = None
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("[progress] %(message)s"))
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
        if progress is not None:
            progress.stop()


def timed(fn):
    """Add a stage's wall time, in seconds, to the summary dict it returns (``"seconds"``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t0 = time.monotonic()
        out = fn(*a, **kw)
        out["seconds"] = round(time.monotonic() - t0, 2)
        return out

    return wrapper
