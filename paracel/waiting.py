"""Waiting without burning a core: poll MPI, yield briefly, then sleep with growing pauses.

A rank blocked in ``MPI_Recv`` spins at 100% of a core, and a paracel job runs more ranks than
the machine has cores, so every wait in paracel polls with ``Iprobe`` instead.
"""
from __future__ import annotations

import os
import time

from mpi4py import MPI

SPIN_SECONDS = 2e-3
FIRST_SLEEP = 50e-6
MAX_SLEEP = 1e-3


class Backoff:
    """Call ``pause()`` after each unsuccessful poll; ``reset()`` once something arrived.

    For ``spin`` seconds a pause only yields the core (a reply usually comes within that, and
    a yield costs nothing when no other rank wants the core); then it sleeps, doubling the
    sleep up to ``max_sleep``.
    """

    def __init__(self, spin: float = SPIN_SECONDS, max_sleep: float = MAX_SLEEP) -> None:
        self.spin = spin
        self.max_sleep = max_sleep
        self.reset()

    def reset(self) -> None:
        self._since = time.perf_counter()
        self._sleep = FIRST_SLEEP

    def pause(self) -> None:
        if time.perf_counter() - self._since < self.spin:
            os.sched_yield()
            return
        time.sleep(self._sleep)
        self._sleep = min(2 * self._sleep, self.max_sleep)


def probe(comm: MPI.Comm, source: int, tag: int, status: MPI.Status) -> None:
    """Wait until a message from ``source`` with ``tag`` can be received; fills ``status``."""
    if comm.Iprobe(source, tag, status):
        return
    backoff = Backoff()
    while not comm.Iprobe(source, tag, status):
        backoff.pause()

