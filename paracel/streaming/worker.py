"""What drives a ``WorkerLogic`` on one worker (``StreamWorker``).

The worker takes records from its input, hands each to ``on_recv``; the pulls it asks for go
out in batches and their values come back, one key at a time, to ``on_pull_recv`` on the same
thread (no locks needed). At most ``max_pending_pulls`` pulls are unanswered at any moment,
and at most ``MAX_UNAPPLIED`` batches of pushes are not yet known to be applied: at either
limit the worker takes no input until answers arrive (backpressure), so a slow server slows
the workers that feed it instead of queueing their messages without bound. The stream ends
when the input has ended and every request is answered — no waiting time is guessed.
"""
from __future__ import annotations

import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paracel.batch import Key
from paracel.streaming.logic import WorkerLogic
from paracel.streaming.sources import END, StreamInputError
from paracel.streaming.transport import AsyncParams
from paracel.waiting import Backoff

if TYPE_CHECKING:
    from paracel.streaming.job import StreamJob, StreamOptions

#: The update function that sends a key's initial value: stores it if the key is absent,
#: keeps the stored value otherwise (so concurrent initialisers and seeded values are safe).
KEEP_STORED = "paracel.streaming.worker:keep_stored"
MAX_LATENCIES = 1_000_000
#: Batches of pushes sent whose application no server has confirmed yet, at most.
MAX_UNAPPLIED = 16


def keep_stored(old: Any, initial: Any) -> Any:
    """Server update function of ``KEEP_STORED``: the stored value wins."""
    return old


def owner(key: Key, nworkers: int) -> int:
    """The worker (0 .. nworkers-1) whose records have partition key ``key`` (same everywhere)."""
    if isinstance(key, str):
        return zlib.crc32(key.encode()) % nworkers
    return int(key) % nworkers


@dataclass
class StreamStats:
    """What one worker's stream did."""

    lines: int = 0  # lines read (every worker reads the whole input)
    records: int = 0  # records of this worker's share, handed to on_recv
    pulls: int = 0
    pushes: int = 0
    max_pulls_in_flight: int = 0
    input_stalls: int = 0  # times the worker stopped taking input at a limit (pulls or pushes)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # per push: its record's arrival -> applied, s

    def summary(self) -> dict[str, float | int | None]:
        """The counts, records/s and the arrival-to-visible latency (median, p99, in ms)."""
        lat = np.array(self.latencies) * 1e3
        return {"lines": self.lines, "records": self.records, "pulls": self.pulls, "pushes": self.pushes,
                "max_pulls_in_flight": self.max_pulls_in_flight, "input_stalls": self.input_stalls,
                "seconds": self.seconds, "records_per_s": self.records / self.seconds if self.seconds else None,
                "latency_ms_median": float(np.median(lat)) if len(lat) else None,
                "latency_ms_p99": float(np.percentile(lat, 99)) if len(lat) else None}


class StreamWorker:
    """Runs a ``WorkerLogic`` over this worker's share of a stream (the ``ps`` of its callbacks)."""

    def __init__(self, job: "StreamJob", logic: WorkerLogic, params: AsyncParams, options: "StreamOptions",
                 worker_id: int, nworkers: int) -> None:
        self.job, self.logic, self.params, self.options = job, logic, params, options
        self.worker_id, self.nworkers = worker_id, nworkers
        self.stats = StreamStats()
        self._known: set[Key] = set()  # keys whose initial value this worker has sent
        self._init: tuple[list[Key], list[Any]] = ([], [])
        self._push: tuple[list[Key], list[Any], list[float]] = ([], [], [])
        self._pulls: deque[tuple[Key, float]] = deque()  # asked for, not yet sent
        self._in_flight = 0  # pulls sent, not yet answered
        self._unapplied = 0  # batches of pushes sent, not yet known to be applied
        self._dirty: set[Key] = set()  # pushed since the model-update stream last emitted
        self._arrival = 0.0  # arrival time of the record being handled
        self._last_emit = time.perf_counter()

    # -- the ps of the callbacks
    def _ensure(self, key: Key) -> None:
        if key not in self._known:
            self._known.add(key)
            self._init[0].append(key)
            self._init[1].append(self.job.param_init(key))

    def pull(self, key: Key) -> None:
        self._ensure(key)
        self._pulls.append((key, self._arrival))
        self.stats.pulls += 1

    def push(self, key: Key, delta: Any) -> None:
        self._ensure(key)
        keys, deltas, arrivals = self._push
        keys.append(key)
        deltas.append(delta)
        arrivals.append(self._arrival)
        self._dirty.add(key)
        self.stats.pushes += 1

    def output(self, item: Any) -> None:
        self.job.on_output(item)

    # -- driving
    @property
    def _at_limit(self) -> bool:
        return (self._in_flight + len(self._pulls) >= self.options.max_pending_pulls
                or self._unapplied >= MAX_UNAPPLIED)

    def _take(self, source: Any) -> tuple[int, bool]:
        """Hand records to ``on_recv`` while under the pull limit and input is there; returns
        how many and whether the input has ended."""
        took = 0
        while not self._at_limit:
            line = source.poll()
            if line is END:
                return took, True
            if line is None:
                break
            position, self.stats.lines = self.stats.lines, self.stats.lines + 1
            try:
                record = self.job.parse(line, position)
            except ValueError as exc:
                raise StreamInputError(f"{self.options.input}: line {position + 1} of the stream: {exc}: "
                                       f"{line[:60]!r}") from None
            if record is None or owner(self.job.partition_key(record), self.nworkers) != self.worker_id:
                continue
            self._arrival = time.perf_counter()
            self.stats.records += 1
            took += 1
            self.logic.on_recv(record, self)
            if len(self._pulls) >= self.options.batch:
                self._send_pulls()
            elif len(self._push[0]) >= self.options.batch:
                self._send_pushes()
        else:
            self.stats.input_stalls += 1
        return took, False

    def _send_inits(self) -> None:
        """Send the initial values of keys new to this worker (before any pull or push of them)."""
        if self._init[0]:
            self.params.update(*self._init, KEEP_STORED)
            self._init = ([], [])

    def _send_pushes(self) -> None:
        """Send the pushes asked for, with a flush that tells when they are applied."""
        self._send_inits()
        if self._push[0]:
            keys, deltas, arrivals = self._push
            self.params.update(keys, deltas, self.job.param_update)
            self.params.flush(lambda: self._visible(arrivals))
            self._unapplied += 1
            self._push = ([], [], [])

    def _send_pulls(self) -> None:
        """Send as many of the pulls asked for as the limit allows, after the pushes asked for
        before them (a server answers a worker's requests in order: a pull sees every push the
        worker made before it)."""
        self._send_pushes()
        room = self.options.max_pending_pulls - self._in_flight
        if room > 0 and self._pulls:
            sent = [self._pulls.popleft() for _ in range(min(room, len(self._pulls)))]
            self._in_flight += len(sent)
            self.stats.max_pulls_in_flight = max(self.stats.max_pulls_in_flight, self._in_flight)
            distinct = list(dict.fromkeys(key for key, _ in sent))  # a key asked for again is fetched once
            self.params.pull(distinct, lambda at, values: self._answered(sent, [distinct[i] for i in at], values))

    def _answered(self, sent: list[tuple[Key, float]], keys: list[Key], values: list[Any]) -> None:
        """Hand the values of ``keys`` (some of those pulled in ``sent``) to every pull of them,
        in the order asked; a value asked for several times is copied for each but the first."""
        arrived = dict(zip(keys, values))
        handed: set[Key] = set()
        for key, arrival in sent:
            if key not in arrived:
                continue
            value = arrived[key]
            if key in handed and isinstance(value, np.ndarray):
                value = value.copy()
            handed.add(key)
            self._in_flight -= 1
            self._arrival = arrival
            self.logic.on_pull_recv(key, value, self)

    def _visible(self, arrivals: list[float]) -> None:
        self._unapplied -= 1
        now = time.perf_counter()
        if len(self.stats.latencies) < MAX_LATENCIES:
            self.stats.latencies += [now - a for a in arrivals]

    def _emit(self, force: bool = False) -> None:
        """Pull the keys pushed since the last emission for the model-update stream (after this
        worker's pushes on every server, so the values include them)."""
        every = self.options.updates_every
        if every is None or not self._dirty or (not force and time.perf_counter() - self._last_emit < every):
            return
        self._last_emit = time.perf_counter()
        keys, self._dirty = sorted(self._dirty, key=lambda k: (isinstance(k, str), k)), set()
        self.params.pull(keys, lambda at, values: self.job.on_model_update([keys[i] for i in at], values))

    def run(self, source: Any) -> StreamStats:
        """Run the stream to its end; returns once every push is applied on the servers."""
        start, backoff = time.perf_counter(), Backoff()
        ended = closed = False
        while True:
            took = 0
            if not ended:
                took, ended = self._take(source)
            self._send_pulls()
            self._emit()
            if ended and not self._pulls and not self.params.in_flight:
                if closed:
                    break
                closed = True
                self.logic.close(self)
                continue
            if self.params.poll() or took:
                backoff.reset()
            elif self.params.in_flight and (ended or self._at_limit):
                self.params.wait()
            else:
                backoff.pause()
        self._emit(force=True)
        self.params.flush(lambda: None)
        self.params.drain()
        self.stats.seconds = time.perf_counter() - start
        return self.stats
