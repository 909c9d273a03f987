"""The clock rank: keeps every worker's clock, releases workers within the staleness bound, and
runs the barrier of ``sync()`` (so a worker that left early is an error, not a hang)."""
from __future__ import annotations

from typing import Any

from mpi4py import MPI

from paracel.waiting import Backoff
from paracel.wire import TAG_REPLY, TAG_REQUEST, PendingSend, Receiver

#: Clock of a worker that has returned from solve(): it no longer holds anyone back.
FINISHED = 1 << 62


class ClockState:
    """SSP bookkeeping (DESIGN §3, rule 2), without MPI.

    A worker that ticks to clock ``c`` is released once every worker has reached ``c - s``;
    with ``staleness`` None (ASP) it is released at once.
    """

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

    def tick(self, worker: int) -> list[tuple[int, dict[str, Any]]]:
        """Advance ``worker``'s clock; returns the replies now due as ``(worker, header)``."""
        self.clocks[worker] += 1
        self.ticks[worker] += 1
        self.waiting.append(worker)
        return self._release()

    def finish(self, worker: int) -> list[tuple[int, dict[str, Any]]]:
        """``worker`` returned from solve(); returns the replies now due.

        Workers waiting in ``sync()`` get an error: the barrier can no longer complete.
        """
        self.clocks[worker] = FINISHED
        failed = [(w, self._sync_error()) for w in sorted(self.syncing)]
        self.syncing.clear()
        return failed + self._release()

    def sync(self, worker: int) -> list[tuple[int, dict[str, Any]]]:
        """``worker`` entered the barrier of all workers; returns the replies now due."""
        if FINISHED in self.clocks:
            return [(worker, self._sync_error())]
        self.syncing.add(worker)
        if len(self.syncing) < len(self.clocks):
            return []
        released, self.syncing = sorted(self.syncing), set()
        return [(w, {"ok": True, "min": self.min_clock}) for w in released]

    def _sync_error(self) -> dict[str, Any]:
        gone = [w for w, c in enumerate(self.clocks) if c == FINISHED]
        return {"ok": False, "error": f"sync() cannot complete: worker(s) {gone} already returned from solve()"}

    def _release(self) -> list[tuple[int, dict[str, Any]]]:
        low = self.min_clock
        due = [w for w in self.waiting if self.staleness is None or self.clocks[w] - self.staleness <= low]
        self.waiting = [w for w in self.waiting if w not in due]
        self.max_lead = max([self.max_lead] + [self.clocks[w] - low for w in due if self.clocks[w] != FINISHED])
        return [(w, {"ok": True, "min": low}) for w in due]

    def report(self) -> dict[str, Any]:
        """What the run's clocks showed: the bound, the clocks each worker ended, and the most
        clocks any worker ran ahead of the slowest (never more than the staleness)."""
        return {"staleness": self.staleness, "clocks": self.ticks, "max_lead": self.max_lead}

    @property
    def all_finished(self) -> bool:
        return all(c == FINISHED for c in self.clocks)


def run_clock(comm: MPI.Comm, nworkers: int, staleness: int | None) -> ClockState:
    """Serve ticks until every worker is done; returns the final state."""
    state = ClockState(nworkers, staleness)
    receiver = Receiver(comm)
    status = MPI.Status()
    backoff = Backoff()
    sending: list[PendingSend] = []
    while not state.all_finished or sending:
        sending = [s for s in sending if not s.done()]
        if not comm.Iprobe(MPI.ANY_SOURCE, TAG_REQUEST, status):
            backoff.pause()
            continue
        backoff.reset()
        worker = status.Get_source()
        header = receiver.header(status)
        op = header["op"]
        if op == "tick":
            replies = state.tick(worker)
        elif op == "sync":
            replies = state.sync(worker)
        elif op == "done":
            replies = state.finish(worker)
        else:
            raise ValueError(f"clock rank got unknown operation {op!r} from rank {worker}")
        sending += [PendingSend(comm, dest, TAG_REPLY, reply) for dest, reply in replies]
    return state
