"""The clock rank's view of a running job: live progress and the run's ``metrics.jsonl``.

The clock rank sees every tick, every barrier and every metrics row the workers log, each
carrying the sender's usage counters (``paracel.usage``). ``Progress`` turns them into

* ``metrics.jsonl`` in the output folder: one JSON object per event (see ``EVENTS``), with
  ``t``, seconds since the clock rank started;
* what the launching terminal shows (``PROGRESS_ENV``): a ``tqdm`` bar (``bar``: the slowest
  worker's clock of the total, the fastest's, rate, ETA and the latest metrics), one plain line
  per metrics row or clock (``lines``, for logs), or nothing (``quiet``). A worker held back
  for more than ``STUCK_AFTER`` seconds is named with the workers it waits for.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from paracel.usage import TIME_SPLIT

#: Environment variable that picks the display: ``bar``, ``lines`` (the default) or ``quiet``.
PROGRESS_ENV = "PARACEL_PROGRESS"
DISPLAYS = ("bar", "lines", "quiet")
#: A worker held this many seconds by the staleness bound or a barrier is reported as waiting.
STUCK_AFTER = 3.0
#: ... and again every this many seconds while it still waits.
STUCK_REPEAT = 10.0
#: Clock-only lines (a job that logs no metrics) come at most this often, in seconds.
LINE_EVERY = 1.0
#: How many of the latest metrics the bar shows beside it.
BAR_METRICS = 2
#: The ``event`` of each line of ``metrics.jsonl`` and what it says.
EVENTS = {
    "start": "the clock rank started: workers, staleness, unix time",
    "tick": "a worker ended a clock: worker, clock, held (seconds the bound held it), usage",
    "sync": "a worker left a barrier: worker, clock, held, usage",
    "metrics": "a worker logged a metrics row: worker, clock, step, values",
    "total": "a worker declared its total clocks: worker, total",
    "waiting": "a worker has been held for long: worker, clock, held, waits_for [[worker, clock]], barrier",
    "done": "a worker returned from solve(): worker, clock, usage (its final counters)",
}


def display_mode() -> str:
    """The display asked for in ``PROGRESS_ENV`` (``lines`` if unset or unknown)."""
    mode = os.environ.get(PROGRESS_ENV, "lines")
    return mode if mode in DISPLAYS else "lines"


@dataclass
class Holdup:
    """A worker the clock rank holds: since ``since`` (progress time), at ``clock``, waiting for
    ``waits_for`` ([(worker, clock)]) to catch up (``barrier``: in ``sync()``, else the bound)."""

    worker: int
    clock: int
    since: float
    waits_for: list[tuple[int, int]]
    barrier: bool

    def describe(self, now: float) -> str:
        others = ", ".join(f"worker {w} (clock {c})" for w, c in self.waits_for)
        where = "in sync() " if self.barrier else ""
        return f"worker {self.worker} (clock {self.clock}) has waited {now - self.since:.1f} s {where}for {others}"


@dataclass
class Position:
    """How far the job is: the slowest and fastest worker's count of ``unit`` (clocks, or
    metrics rows for a job that never ticks) of ``total``, and the rate since the first one."""

    unit: str
    slowest: int
    fastest: int
    total: int | None
    rate: float | None

    def describe(self) -> str:
        total = f"/{self.total}" if self.total else ""
        text = f"{self.unit} {self.slowest}{total}"
        if self.fastest != self.slowest:
            text += f" (fastest {self.fastest})"
        if self.rate:
            text += f", {self.rate:.3g} {self.unit}s/s"
            if self.total and self.total > self.slowest:
                text += f", ETA {_duration((self.total - self.slowest) / self.rate)}"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def format_metrics(values: dict[str, Any]) -> str:
    """``name=value`` pairs of a metrics row (floats to 6 significant digits, None as ``-``)."""
    shown = {k: "-" if v is None else f"{v:.6g}" if isinstance(v, float) else v for k, v in values.items()}
    return " ".join(f"{k}={v}" for k, v in shown.items())


class LineDisplay:
    """One plain line per metrics row, per clock when no metrics come (at most every
    ``LINE_EVERY`` s), and per long wait: for logs, checked line by line."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last_line = -math.inf
        self.shown = 0  # the count of the last clock-only line

    def _print(self, text: str) -> None:
        print(f"[paracel] {text}", file=self.out, flush=True)

    def metrics(self, step: int, values: dict[str, Any], position: Position, now: float) -> None:
        self._print(f"step {step}: {format_metrics(values)} [{position.describe()}]")
        self.last_line = now

    def advance(self, position: Position, now: float, any_metrics: bool) -> None:
        if not any_metrics and position.slowest > self.shown and now - self.last_line >= LINE_EVERY:
            self._print(position.describe())
            self.last_line, self.shown = now, position.slowest

    def waiting(self, holdups: list[str]) -> None:
        self._print("waiting: " + "; ".join(holdups))

    def close(self, summary: str) -> None:
        self._print(summary)


class BarDisplay:
    """A ``tqdm`` bar of the slowest worker's clocks, the fastest worker's clock and the latest
    metrics beside it; metrics rows and waits are written above it."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.bar: Any = None
        self.latest = ""

    def _bar(self, position: Position) -> Any:
        from tqdm import tqdm
        if self.bar is None:
            self.bar = tqdm(total=position.total, unit=position.unit, file=self.out, desc="paracel",
                            ncols=shutil.get_terminal_size().columns, mininterval=0.2, leave=True)
        if position.total and self.bar.total != position.total:
            self.bar.total = position.total
        return self.bar

    def metrics(self, step: int, values: dict[str, Any], position: Position, now: float) -> None:
        self._bar(position).write(f"[paracel] step {step}: {format_metrics(values)}", file=self.out)
        shown = list(values.items())[:BAR_METRICS]  # short, or tqdm squeezes the bar away
        self.latest = " ".join(f"{k}={'-' if v is None else f'{v:.4g}'}" for k, v in shown)
        self.advance(position, now, True)

    def advance(self, position: Position, now: float, any_metrics: bool) -> None:
        bar = self._bar(position)
        bar.set_postfix_str(f"fastest {position.fastest}" + (f", {self.latest}" if self.latest else ""),
                            refresh=False)
        if position.slowest > bar.n:
            bar.update(position.slowest - bar.n)
        else:
            bar.refresh()

    def waiting(self, holdups: list[str]) -> None:
        text = "[paracel] waiting: " + "; ".join(holdups)
        if self.bar is None:
            print(text, file=self.out, flush=True)
        else:
            self.bar.write(text, file=self.out)

    def close(self, summary: str) -> None:
        if self.bar is not None:
            self.bar.close()
        print(f"[paracel] {summary}", file=self.out, flush=True)


class QuietDisplay:
    """Shows nothing (``--quiet``)."""

    def metrics(self, *args: Any) -> None:
        pass

    advance = waiting = close = metrics


@dataclass
class _Worker:
    clock: int = 0
    rows: int = 0  # metrics rows it logged
    usage: dict[str, Any] = field(default_factory=dict)  # its latest counters


class Progress:
    """What the clock rank knows of the job's progress, shown on ``out`` in display ``mode``
    and recorded to ``output_dir / "metrics.jsonl"`` (no file without ``output_dir``)."""

    def __init__(self, nworkers: int, staleness: int | None, output_dir: Path | None = None,
                 mode: str = "quiet", out: IO[str] | None = None) -> None:
        self.started = time.perf_counter()
        self.workers = [_Worker() for _ in range(nworkers)]
        self.total: int | None = None
        self.ticked = False
        self.any_metrics = False
        self.first: tuple[float, int] | None = None  # (time, count) when the count first moved
        self.reported: dict[tuple[int, float], float] = {}  # waits shown: (worker, since) -> when
        out = out or sys.stdout
        self.display = {"bar": BarDisplay, "lines": LineDisplay}[mode](out) if mode != "quiet" else QuietDisplay()
        self.record = open(output_dir / "metrics.jsonl", "w", encoding="utf-8") if output_dir else None
        self._write("start", workers=nworkers, staleness=staleness, unix=time.time())

    def now(self) -> float:
        """Seconds since the clock rank started."""
        return time.perf_counter() - self.started

    def _write(self, event: str, **fields: Any) -> None:
        if self.record is not None:
            self.record.write(json.dumps({"event": event, "t": round(self.now(), 6), **fields}) + "\n")

    def position(self) -> Position:
        """How far the job is now (the rate counts from the first call that sees it move)."""
        if self.ticked:
            slowest, fastest = min(w.clock for w in self.workers), max(w.clock for w in self.workers)
        else:  # rows come from the workers that log them (often worker 0 alone)
            slowest = fastest = max(w.rows for w in self.workers)
        now = self.now()
        if self.first is None and slowest > 0:  # from the slowest worker's first clock: a
            self.first = (now, slowest)          # rate over one clock's tail would be absurd
        rate = None
        if self.first is not None and now > self.first[0] and slowest > self.first[1]:
            rate = (slowest - self.first[1]) / (now - self.first[0])
        return Position("clock" if self.ticked else "step", slowest, fastest, self.total, rate)

    def clock_event(self, event: str, worker: int, clock: int, arrived: float, usage: dict[str, Any] | None) -> None:
        """``worker`` was released from a tick or barrier (``event``) it entered at ``arrived``."""
        state = self.workers[worker]
        state.usage = usage or state.usage
        self._write(event, worker=worker, clock=clock, held=round(self.now() - arrived, 6), usage=usage)
        if event == "tick":
            self.ticked = True
            state.clock = clock
            self.display.advance(self.position(), self.now(), self.any_metrics)

    def metrics(self, worker: int, step: int, values: dict[str, Any]) -> None:
        """``worker`` logged ``values`` for ``step``."""
        state = self.workers[worker]
        state.rows += 1
        self.any_metrics = True
        self._write("metrics", worker=worker, clock=state.clock, step=step, values=values)
        self.display.metrics(step, values, self.position(), self.now())

    def set_total(self, worker: int, total: int) -> None:
        """``worker`` will run ``total`` clocks (or log that many rows)."""
        self.total = max(total, self.total or 0)
        self._write("total", worker=worker, total=total)

    def done(self, worker: int, clock: int, usage: dict[str, Any] | None) -> None:
        """``worker`` returned from ``solve()``."""
        self.workers[worker].usage = usage or self.workers[worker].usage
        self._write("done", worker=worker, clock=clock, usage=usage)

    def check(self, holdups: list[Holdup]) -> None:
        """Report the workers held for more than ``STUCK_AFTER`` s (again every ``STUCK_REPEAT``
        s), and let ``metrics.jsonl`` catch up on disk (called every fraction of a second)."""
        now = self.now()
        due = [h for h in holdups if now - h.since >= STUCK_AFTER
               and now - self.reported.get((h.worker, h.since), -math.inf) >= STUCK_REPEAT]
        for h in due:
            self.reported[(h.worker, h.since)] = now
            self._write("waiting", worker=h.worker, clock=h.clock, held=round(now - h.since, 6),
                        waits_for=h.waits_for, barrier=h.barrier)
        if due:
            self.display.waiting([h.describe(now) for h in due])
        if self.record is not None:
            self.record.flush()

    def close(self) -> None:
        """Show the job's summary and close ``metrics.jsonl``."""
        self.display.close(self.summary())
        if self.record is not None:
            self.record.close()

    def summary(self) -> str:
        """One line: how far the job went, in how long, and how the workers spent their time."""
        usages = [w.usage for w in self.workers if w.usage]
        text = f"done: {self.position().describe()} in {_duration(self.now())}"
        wall = sum(u["wall"] for u in usages)
        if wall > 0:
            shares = [(sum(u[key] for u in usages) / wall, name) for key, name in TIME_SPLIT]
            text += "; workers " + ", ".join(f"{share:.0%} {name}" for share, name in shares)
        return text
