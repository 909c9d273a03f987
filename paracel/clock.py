"""The clock rank: keeps every worker's clock, releases workers within the staleness bound, and
runs the barrier of ``sync()`` (so a worker that left early is an error, not a hang)."""
from __future__ import annotations

from typing import Any

from mpi4py import MPI

from paracel.errors import ParacelError
from paracel.protocol import Done, ErrorReply, Proceed, Sync, Tick
from paracel.service import Outbox, Service, handles, run_service

#: Clock of a worker that has returned from solve(): it no longer holds anyone back.
FINISHED = 1 << 62


class ClockState(Service):
    """SSP bookkeeping (DESIGN §3, rule 2).

    A worker that ticks to clock ``c`` is released once every worker has reached ``c - s``;
    with ``staleness`` None (ASP) it is released at once. Each handler returns the replies now
    due, to whichever workers they release.
    """

    name = "clock"

    def __init__(self, nworkers: int, staleness: int | None) -> None:
        self.clocks = [0] * nworkers
        self.staleness = staleness
        self.waiting: list[int] = []
        self.syncing: set[int] = set()
        self.ticks = [0] * nworkers
        self.max_lead = 0  # most clocks a released worker was ahead of the slowest (<= s)

    @property
    def min_clock(self) -> int:
        return min(self.clocks)

    @property
    def finished(self) -> bool:
        """Whether every worker has returned from solve()."""
        return all(c == FINISHED for c in self.clocks)

    @handles(Tick)
    def tick(self, worker: int, request: Tick) -> Outbox:
        """Advance ``worker``'s clock."""
        self.clocks[worker] += 1
        self.ticks[worker] += 1
        self.waiting.append(worker)
        return self._release()

    @handles(Done)
    def finish(self, worker: int, request: Done) -> Outbox:
        """``worker`` returned from solve(); workers waiting in ``sync()`` get an error: the
        barrier can no longer complete."""
        self.clocks[worker] = FINISHED
        failed = [(w, self._sync_error()) for w in sorted(self.syncing)]
        self.syncing.clear()
        return failed + self._release()

    @handles(Sync)
    def sync(self, worker: int, request: Sync) -> Outbox:
        """``worker`` entered the barrier of all workers."""
        if FINISHED in self.clocks:
            return [(worker, self._sync_error())]
        self.syncing.add(worker)
        if len(self.syncing) < len(self.clocks):
            return []
        released, self.syncing = sorted(self.syncing), set()
        return [(w, Proceed(self.min_clock)) for w in released]

    def _sync_error(self) -> ErrorReply:
        gone = [w for w, c in enumerate(self.clocks) if c == FINISHED]
        return ErrorReply.of(ParacelError(f"sync() cannot complete: worker(s) {gone} already returned from solve()"))

    def _release(self) -> Outbox:
        low = self.min_clock
        due = [w for w in self.waiting if self.staleness is None or self.clocks[w] - self.staleness <= low]
        self.waiting = [w for w in self.waiting if w not in due]
        self.max_lead = max([self.max_lead] + [self.clocks[w] - low for w in due if self.clocks[w] != FINISHED])
        return [(w, Proceed(low)) for w in due]

    def report(self) -> dict[str, Any]:
        """What the run's clocks showed: the bound, the clocks each worker ended, and the most
        clocks any worker ran ahead of the slowest (never more than the staleness)."""
        return {"staleness": self.staleness, "clocks": self.ticks, "max_lead": self.max_lead}


def run_clock(comm: MPI.Comm, nworkers: int, staleness: int | None) -> ClockState:
    """Serve ticks until every worker is done; returns the final state."""
    state = ClockState(nworkers, staleness)
    run_service(comm, state)
    return state
