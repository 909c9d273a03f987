"""Where a worker's time and bytes go, counted by its ``ParamClient`` and sent to the clock rank.

Every request a worker sends passes through ``ParamClient._exchange``; around it the client
calls ``start_call`` / ``sent`` / ``received`` / ``end_call``, and every read, served by the
cache too, reports the staleness it saw with ``read``. Time inside a call to the clock rank
(tick, sync) is *waiting* — on the staleness bound or a barrier —, time inside a call to the
servers is *communicating*, and the time between calls is *computing* (the algorithm's own
work, its data loading and its collectives among the workers). The three add up to the
worker's wall time since it started. Each request to the clock carries ``snapshot()``.
"""
from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from paracel.client import ParamClient
    from paracel.protocol import Request

#: Columns of a worker's per-server load (``snapshot()["load"][server]``).
LOAD_COLUMNS = ("requests", "keys", "bytes_sent", "bytes_received")
#: The parts of a worker's wall time in a snapshot, and what they are called when shown.
TIME_SPLIT = (("compute", "computing"), ("wait", "waiting"), ("comm", "communicating"))


class Usage:
    """Cumulative counters of one worker since it started (all seconds are wall time).

    ``compute``, ``wait``, ``comm``: seconds computing, waiting on the clock rank, and
    communicating with the servers; ``load[s]``: requests, keys, bytes sent and received for
    server ``s``; ``staleness``: how many reads saw each lag, cache hits included — the
    worker's clock minus the clock its stalest value was fresh from (the slowest clock the worker
    knew of when it pulled that value: the value holds every update stamped before it).
    """

    def __init__(self, client: "ParamClient") -> None:
        self.client = client
        self.started = self._mark = time.perf_counter()
        self.compute = self.wait = self.comm = 0.0
        self.first_server = client.layout.server_rank(0)
        self.load = [[0, 0, 0, 0] for _ in range(client.layout.nservers)]
        self.staleness: Counter[int] = Counter()
        self.host, self.pid = socket.gethostname(), os.getpid()

    def read(self, lag: int) -> None:
        """A read saw values at most ``lag`` clocks stale."""
        self.staleness[lag] += 1

    def start_call(self, calls: Sequence[tuple[int, "Request"]]) -> float:
        """A call begins now: ends a stretch of computing and stamps requests to the clock rank
        with the usage so far. Returns the start time."""
        now = time.perf_counter()
        self.compute += now - self._mark
        self._mark = now
        clock_rank = self.client.layout.clock_rank
        for rank, request in calls:
            if rank == clock_rank:
                request.usage = self.snapshot()
        return now

    def sent(self, rank: int, request: "Request", buffers: Sequence[np.ndarray]) -> None:
        """``request`` with payload ``buffers`` went to ``rank``."""
        server = rank - self.first_server
        if 0 <= server < len(self.load):
            row = self.load[server]
            row[0] += 1
            keys = getattr(request, "keys", None)
            row[1] += len(keys) if keys is not None else 0
            row[2] += sum(b.nbytes for b in buffers)

    def received(self, rank: int, buffers: Sequence[np.ndarray]) -> None:
        """A reply with payload ``buffers`` came from ``rank``."""
        server = rank - self.first_server
        if 0 <= server < len(self.load):
            self.load[server][3] += sum(b.nbytes for b in buffers)

    def end_call(self, started: float, calls: Sequence[tuple[int, "Request"]]) -> None:
        """The call of ``calls`` that began at ``started`` returned: waiting if it went to the
        clock rank, else communicating."""
        now = time.perf_counter()
        clock_rank = self.client.layout.clock_rank
        if any(rank == clock_rank for rank, _ in calls):
            self.wait += now - started
        else:
            self.comm += now - started
        self._mark = now

    def snapshot(self) -> dict[str, Any]:
        """The counters so far, as plain numbers (msgpack and JSON): ``wall``, ``compute``,
        ``wait``, ``comm`` (seconds), ``clock``, ``hits`` and ``misses`` of the read cache,
        ``load`` (per server, ``LOAD_COLUMNS``), ``staleness`` ({lag: reads}), ``host``, ``pid``."""
        now = time.perf_counter()
        return {"wall": round(now - self.started, 6), "compute": round(self.compute + (now - self._mark), 6),
                "wait": round(self.wait, 6), "comm": round(self.comm, 6), "clock": self.client.clock,
                "hits": int(getattr(self.client, "cache_hits", 0)),
                "misses": int(getattr(self.client, "cache_misses", 0)),
                "load": [list(row) for row in self.load], "staleness": dict(self.staleness),
                "host": self.host, "pid": self.pid}
