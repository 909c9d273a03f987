"""Waiting without burning a core: poll MPI, yield briefly, then sleep with growing pauses.

A rank blocked in ``MPI_Recv`` spins at 100% of a core, and a paracel job runs more ranks than
the machine has cores, so every wait in paracel polls with ``Iprobe`` instead.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from mpi4py import MPI

from paracel.errors import RequestTimeout

SPIN = 300e-6
NAP = 50e-6
BUSY = 20e-3
MAX_SLEEP = 1e-3


class Backoff:
    """Call ``pause()`` after each unsuccessful poll; ``reset()`` once something arrived.

    Right after a message, a pause only yields the core (the next message often follows within
    ``spin`` seconds, and a yield costs nothing when no other rank wants the core). Until
    ``busy`` seconds have passed it naps briefly, so a worker's next burst of requests after a
    short computation is answered quickly; after that it sleeps, doubling up to ``max_sleep``.
    """

    def __init__(self, spin: float = SPIN, nap: float = NAP, busy: float = BUSY,
                 max_sleep: float = MAX_SLEEP) -> None:
        self.spin, self.nap, self.busy, self.max_sleep = spin, nap, busy, max_sleep
        self.reset()

    def reset(self) -> None:
        self._since = time.perf_counter()
        self._sleep = self.nap

    def pause(self) -> None:
        idle = time.perf_counter() - self._since
        if idle < self.spin:
            os.sched_yield()
        elif idle < self.busy:
            time.sleep(self.nap)
        else:
            time.sleep(self._sleep)
            self._sleep = min(2 * self._sleep, self.max_sleep)


def probe(comm: MPI.Comm, source: int, tag: int, status: MPI.Status, timeout: float | None = None,
          describe: Callable[[], str] = lambda: "no reply arrived", backoff: Backoff | None = None) -> None:
    """Wait until a message from ``source`` with ``tag`` can be received; fills ``status``.

    Raises ``RequestTimeout`` with ``describe()`` (e.g. "server rank 3 did not answer update")
    if none can after ``timeout`` seconds (None: wait for ever). ``backoff``: as in ``wait_until``.
    """
    if not comm.Iprobe(source, tag, status):
        wait_until(lambda: comm.Iprobe(source, tag, status), timeout, describe, backoff)


def wait_until(ready: Callable[[], bool], timeout: float | None = None,
               describe: Callable[[], str] = lambda: "nothing happened", backoff: Backoff | None = None) -> None:
    """Poll ``ready()`` (an MPI test) with ``backoff`` (default ``Backoff()``) until it is true.

    Raises ``RequestTimeout`` with ``describe()`` if it is still false after ``timeout``
    seconds (None: wait for ever).
    """
    backoff = backoff or Backoff()
    deadline = None if timeout is None else time.monotonic() + timeout
    while not ready():
        if deadline is not None and time.monotonic() > deadline:
            raise RequestTimeout(f"{describe()} within {timeout:g} s (config 'request_timeout')")
        backoff.pause()
