"""The clock rank: keeps every worker's clock, releases workers within the staleness bound, and
runs the barrier of ``sync()`` (so a worker that left early is an error, not a hang)."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from mpi4py import MPI

from paracel.errors import ParacelError
from paracel.progress import Holdup, Progress, display_mode
from paracel.protocol import Done, ErrorReply, Proceed, Report, Sync, Tick
from paracel.service import Outbox, Service, handles, run_service

#: Clock of a worker that has returned from solve(): it no longer holds anyone back.
FINISHED = 1 << 62
#: Seconds between two looks for workers held too long (``Progress.check``).
CHECK_EVERY = 0.5


class ClockState(Service):
    """SSP bookkeeping (DESIGN §3, rule 2).

    A worker that ticks to clock ``c`` is released once every worker has reached ``c - s``;
    with ``staleness`` None (ASP) it is released at once. Each handler returns the replies now
    due, to whichever workers they release, and tells ``progress`` what happened.
    """

    name = "clock"

    def __init__(self, nworkers: int, staleness: int | None, progress: Progress | None = None,
                 start: int = 0) -> None:
        self.clocks = [start] * nworkers  # start > 0: resumed from a checkpoint of that clock
        self.staleness = staleness
        self.waiting: list[int] = []
        self.syncing: set[int] = set()
        self.arrived: dict[int, float] = {}  # worker held in a tick or sync -> when it came (progress time)
        self._usage: dict[int, dict[str, Any] | None] = {}  # and the usage its request carried
        self.ticks = [0] * nworkers
        self.max_lead = 0  # most clocks a released worker was ahead of the slowest (<= s)
        self.progress = progress or Progress(nworkers, staleness)
        self._next_check = 0.0

    @property
    def min_clock(self) -> int:
        return min(self.clocks)

    @property
    def finished(self) -> bool:
        """Whether every worker has returned from solve(). The service loop asks between
        requests, so this is also where workers held too long are looked for: a stuck job sends
        no request that could trigger it."""
        now = time.perf_counter()
        if now >= self._next_check:
            self._next_check = now + CHECK_EVERY
            self.progress.check(self.holdups())
        return all(c == FINISHED for c in self.clocks)

    def holdups(self) -> list[Holdup]:
        """Every worker held now, with the workers it waits for."""
        held = []
        for w in self.waiting:
            behind = [(v, self.ticks[v]) for v, c in enumerate(self.clocks) if c < self.clocks[w] - self.staleness]
            held.append(Holdup(w, self.ticks[w], self.arrived[w], behind, barrier=False))
        for w in sorted(self.syncing):
            absent = [(v, self.ticks[v]) for v in range(len(self.clocks)) if v not in self.syncing]
            held.append(Holdup(w, self.ticks[w], self.arrived[w], absent, barrier=True))
        return held

    @handles(Tick)
    def tick(self, worker: int, request: Tick) -> Outbox:
        """Advance ``worker``'s clock."""
        self.clocks[worker] += 1
        self.ticks[worker] += 1
        self._arrive(worker, request)
        self.waiting.append(worker)
        return self._release()

    @handles(Done)
    def finish(self, worker: int, request: Done) -> Outbox:
        """``worker`` returned from solve(); workers waiting in ``sync()`` get an error: the
        barrier can no longer complete."""
        self.clocks[worker] = FINISHED
        self.progress.done(worker, self.ticks[worker], request.usage)
        failed = [(w, self._sync_error()) for w in sorted(self.syncing)]
        self.syncing.clear()
        return failed + self._release()

    @handles(Sync)
    def sync(self, worker: int, request: Sync) -> Outbox:
        """``worker`` entered the barrier of all workers."""
        if FINISHED in self.clocks:
            return [(worker, self._sync_error())]
        self._arrive(worker, request)
        self.syncing.add(worker)
        if len(self.syncing) < len(self.clocks):
            return []
        released, self.syncing = sorted(self.syncing), set()
        for w in released:
            self._left(w, "sync")
        return [(w, Proceed(self.min_clock)) for w in released]

    @handles(Report)
    def report_progress(self, worker: int, request: Report) -> Outbox:
        """``worker`` logged a metrics row and/or declared its total clocks."""
        if request.total is not None:
            self.progress.set_total(worker, request.total)
        if request.values is not None:
            self.progress.metrics(worker, request.step, request.values)
        return []

    def _arrive(self, worker: int, request: Tick | Sync) -> None:
        self.arrived[worker] = self.progress.now()
        self._usage[worker] = request.usage

    def _left(self, worker: int, event: str) -> None:
        self.progress.clock_event(event, worker, self.ticks[worker], self.arrived.pop(worker),
                                  self._usage.pop(worker))

    def _sync_error(self) -> ErrorReply:
        gone = [w for w, c in enumerate(self.clocks) if c == FINISHED]
        return ErrorReply.of(ParacelError(f"sync() cannot complete: worker(s) {gone} already returned from solve()"))

    def _release(self) -> Outbox:
        low = self.min_clock
        due = [w for w in self.waiting if self.staleness is None or self.clocks[w] - self.staleness <= low]
        self.waiting = [w for w in self.waiting if w not in due]
        self.max_lead = max([self.max_lead] + [self.clocks[w] - low for w in due if self.clocks[w] != FINISHED])
        for w in due:
            self._left(w, "tick")
        return [(w, Proceed(low)) for w in due]

    def report(self) -> dict[str, Any]:
        """What the run's clocks showed: the bound, the clocks each worker ended, the most
        clocks any worker ran ahead of the slowest (never more than the staleness), and the host
        of each worker (by rank) and of the clock rank (``hosts``; "clock")."""
        hosts = {str(w): state.usage["host"] for w, state in enumerate(self.progress.workers) if state.usage}
        hosts["clock"] = socket.gethostname()
        return {"staleness": self.staleness, "clocks": self.ticks, "max_lead": self.max_lead, "hosts": hosts}


def run_clock(comm: MPI.Comm, nworkers: int, staleness: int | None, output_dir: Path | None = None,
              start: int = 0) -> ClockState:
    """Serve ticks until every worker is done, showing the job's progress (``display_mode()``)
    and recording it in ``output_dir / "metrics.jsonl"``; returns the final state. Workers start
    at clock ``start`` (a resumed job: the checkpoint's)."""
    progress = Progress(nworkers, staleness, output_dir, display_mode())
    state = ClockState(nworkers, staleness, progress, start)
    try:
        run_service(comm, state)
    finally:
        progress.close()
    return state
