"""A worker's connection to the parameter servers and the clock: routing, batching, SSP cache."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from mpi4py import MPI

from paracel.batch import INT_KEYS, STR_KEYS, Key, KeyBatch, ValueBatch
from paracel.cache import ReadCache
from paracel.layout import Layout
from paracel.protocol import (Contains, Done, ErrorReply, Flush, Items, Pull, Push, Remove, Reply, Request, Sync, Tick,
                              TopK, Update)
from paracel.ring import KeyRing
from paracel.waiting import probe
from paracel.wire import TAG_REPLY, TAG_REQUEST, Receiver, send

Keys = Sequence[Key] | np.ndarray

class Share(NamedTuple):
    """The part of a batch that one server holds."""

    rank: int
    positions: np.ndarray  # of its keys in the batch
    keys: KeyBatch
    values: ValueBatch | None


class ParamClient:
    """Talks to the servers for one worker and keeps its clock (DESIGN §3).

    Updates are stamped with the worker's clock; ``commit`` flushes them (every server has
    applied them) before ticking, then waits while the worker is more than ``staleness`` clocks
    ahead of the slowest. Reads are served from a local cache while the cached copy is fresh
    enough for the bound (never under ASP, ``staleness=None``).
    """

    def __init__(self, comm: MPI.Comm, layout: Layout, staleness: int | None, cache: bool = True,
                 request_timeout: float | None = None) -> None:
        self.comm = comm
        self.request_timeout = request_timeout  # seconds a server's reply may take (None: no limit)
        self.layout = layout
        self.staleness = staleness
        self.ring = KeyRing(layout.nservers)
        self.receiver = Receiver(comm)
        self.status = MPI.Status()
        self.clock = 0
        self.known_min = 0
        self.use_cache = cache and staleness is not None
        self.cache = ReadCache()
        self._unflushed: set[int] = set()

    @property
    def cache_hits(self) -> int:
        """Keys read so far that the cache served."""
        return self.cache.hits

    @property
    def cache_misses(self) -> int:
        """Keys read so far, with the cache on, that had to be pulled."""
        return self.cache.misses

    # -- messaging
    def call(self, calls: Sequence[tuple[int, Request]]) -> list[Reply]:
        """Send each request to its rank, then collect the replies of those that await one, in order.

        Raises the exception the first error reply stands for (``RemoteKeyError``,
        ``ServerError`` or ``ParacelError``), after every reply has arrived.
        """
        usage = self.usage  # paracel.usage.Usage, attached with the worker's algorithm
        started = usage.start_call(calls)
        for rank, request in calls:
            header, buffers = request.encode()
            usage.sent(rank, request, buffers)
            send(self.comm, rank, TAG_REQUEST, header, buffers, self.request_timeout,
                 lambda: f"{self.layout.role(rank)} rank {rank} did not take {request.op}")
        awaited = [(rank, request) for rank, request in calls if request.awaits_reply]
        received = []
        for rank, request in awaited:
            timeout = None if rank == self.layout.clock_rank else self.request_timeout  # SSP waits have no limit
            probe(self.comm, rank, TAG_REPLY, self.status, timeout,
                  lambda: f"{self.layout.role(rank)} rank {rank} did not answer {request.op}")
            header = self.receiver.header(self.status)
            received.append((header, self.receiver.payload(rank, header, reuse=False)))
            usage.received(rank, received[-1][1])
        usage.end_call(started, calls)
        replies = [request.read_reply(header, buffers) for (_, request), (header, buffers) in zip(awaited, received)]
        for (rank, _), reply in zip(awaited, replies):
            if isinstance(reply, ErrorReply):
                raise reply.exception(f"{self.layout.role(rank)} rank {rank}")
        return replies

    def _split(self, keys: KeyBatch, values: ValueBatch | None = None) -> list[Share]:
        """The share of ``keys`` (and ``values``) of every server that holds some of them."""
        shares = []
        for server, where in self.ring.split(keys):
            if len(where) == len(keys):
                shares.append(Share(self.layout.server_rank(server), where, keys, values))
            else:
                part_values = values.take(where) if values is not None else None
                shares.append(Share(self.layout.server_rank(server), where, keys.take(where), part_values))
        return shares

    # -- reads
    def read(self, keys: Keys | Key, as_array: bool = False) -> list[Any] | np.ndarray:
        """Values of ``keys`` (a list, or with ``as_array`` one array of shape (n, *shape)).

        Keys cached fresh enough for SSP rule 1 are served from the cache; only the others are
        pulled. Raises ``RemoteKeyError`` naming absent keys, ``ValueError`` if ``as_array`` is
        asked of values that differ in dtype or shape.
        """
        batch = KeyBatch.of(keys)
        if not self.use_cache:
            return _output(self._pull(batch), as_array)
        slots = self.cache.slots(batch)
        hit = self.cache.fresh(slots, self.clock - self.staleness)
        nhit = int(np.count_nonzero(hit))
        self.cache.hits += nhit
        self.cache.misses += len(batch) - nhit
        if nhit == len(batch):
            return _output(self.cache.values(slots), as_array)
        missing = batch if nhit == 0 else batch.take(np.flatnonzero(~hit))
        stamp = self.known_min
        values = self._pull(missing)
        self.cache.store(missing, values, stamp)
        if nhit:  # a partial hit: every value is in the cache now
            values = self.cache.values(self.cache.slots(batch))
        return _output(values, as_array)

    def _pull(self, batch: KeyBatch) -> ValueBatch:
        """The values of ``batch`` from the servers, in order."""
        shares = self._split(batch)
        replies = self.call([(share.rank, Pull(share.keys)) for share in shares])
        return _combine([reply.values for reply in replies], [share.positions for share in shares], len(batch))

    def contains(self, keys: Keys | Key) -> np.ndarray:
        """Bool array: which keys some server holds."""
        batch = KeyBatch.of(keys)
        shares = self._split(batch)
        out = np.zeros(len(batch), dtype=bool)
        replies = self.call([(share.rank, Contains(share.keys)) for share in shares])
        for share, reply in zip(shares, replies):
            out[share.positions] = reply.present
        return out

    def _scan(self, request_for: Callable[[str], Items], prefix: str | None) -> tuple[list[Key], list[Any]]:
        """Keys and values from every server, asking ``request_for(kind)`` for each key kind
        (str keys only, where ``prefix`` filters them)."""
        keys: list[Key] = []
        values: list[Any] = []
        for kind in (STR_KEYS,) if prefix is not None else (INT_KEYS, STR_KEYS):
            servers = range(self.layout.nservers)
            for reply in self.call([(self.layout.server_rank(s), request_for(kind)) for s in servers]):
                keys += reply.keys.to_list()
                values += reply.values.to_list()
        return keys, values

    def items(self, prefix: str | None = None) -> dict[Key, Any]:
        """Every key (or every str key starting with ``prefix``) and its value."""
        return dict(zip(*self._scan(lambda kind: Items(kind, prefix), prefix)))

    def topk(self, k: int, prefix: str | None = None) -> list[tuple[Key, Any]]:
        """The ``k`` (key, value) pairs with the largest scalar values, largest first
        (ties: the smaller key first; int keys sort before str keys)."""
        keys, values = self._scan(lambda kind: TopK(kind, prefix, k), prefix)
        pairs = sorted(zip(keys, values), key=lambda kv: (-kv[1], isinstance(kv[0], str), kv[0]))
        return pairs[:k]

    # -- writes
    def _forget(self, batch: KeyBatch) -> None:
        """Drop cached copies of keys this worker changes (read-my-writes)."""
        if self.use_cache:
            self.cache.forget(batch)

    def write(self, keys: Keys | Key, values: Sequence[Any] | np.ndarray) -> None:
        """Store ``values`` under ``keys``; returns once every server has stored them."""
        batch = KeyBatch.of(keys)
        self.write_batch(batch, ValueBatch.of(values, len(batch)))

    def write_batch(self, keys: KeyBatch, values: ValueBatch) -> None:
        """``write`` of batches as the table holds them (e.g. read back from a checkpoint)."""
        self._forget(keys)
        shares = self._split(keys, values)
        self.call([(share.rank, Push(share.keys, share.values)) for share in shares])

    def update(self, keys: Keys | Key, deltas: Sequence[Any] | np.ndarray, fn: str = "add",
               wait_applied: bool = True) -> None:
        """Apply ``fn(old, delta)`` on the servers; without ``wait_applied`` return at once
        (errors then surface at the next flush)."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        shares = self._split(batch, ValueBatch.of(deltas, len(batch)))
        self.call([(share.rank, Update(share.keys, share.values, fn, wait_applied)) for share in shares])
        if not wait_applied:
            self._unflushed.update(share.rank for share in shares)

    def remove(self, keys: Keys | Key) -> int:
        """Delete ``keys``; returns how many existed."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        replies = self.call([(share.rank, Remove(share.keys)) for share in self._split(batch)])
        return sum(reply.count for reply in replies)

    # -- clocks
    def flush(self) -> None:
        """Return once every batched update sent so far has been applied by its server."""
        if self._unflushed:
            ranks, self._unflushed = sorted(self._unflushed), set()
            self.call([(rank, Flush()) for rank in ranks])

    def _ask_clock(self, request: Tick | Sync) -> None:
        (reply,) = self.call([(self.layout.clock_rank, request)])
        self.known_min = max(self.known_min, reply.min_clock)

    def start_at(self, clock: int) -> None:
        """Begin at ``clock`` instead of 0 (a job resumed from a checkpoint of that clock; the
        clock rank starts every worker there too)."""
        self.clock = self.known_min = clock

    def commit(self) -> None:
        """End this worker's clock: flush, tick, and wait while too far ahead (SSP rule 2)."""
        self.flush()
        self.clock += 1
        self._ask_clock(Tick())
        if self.use_cache:
            self.cache.compact(self.clock - self.staleness)

    def sync(self) -> None:
        """Barrier of all workers, after which every worker's updates are visible to all.

        Raises ``ParacelError`` if some worker has already returned from ``solve()``.
        """
        self.flush()
        self._ask_clock(Sync())
        if self.use_cache:
            self.cache.clear()

    def finish(self) -> None:
        """Tell the servers and the clock that this worker is done (after a final flush)."""
        self.flush()
        ranks = [self.layout.server_rank(server) for server in range(self.layout.nservers)]
        self.call([(rank, Done()) for rank in [*ranks, self.layout.clock_rank]])


def _combine(parts: list[ValueBatch], positions: list[np.ndarray], n: int) -> ValueBatch:
    """Put per-server value batches back in the caller's key order (dense when they agree)."""
    if len(parts) == 1:
        return parts[0]
    if parts and all(p.dense is not None and p.py == parts[0].py and p.dense.dtype == parts[0].dense.dtype
                     and p.dense.shape[1:] == parts[0].dense.shape[1:] for p in parts):
        out = np.empty((n, *parts[0].dense.shape[1:]), dtype=parts[0].dense.dtype)
        for part, pos in zip(parts, positions):
            out[pos] = part.dense
        return ValueBatch(dense=out, py=parts[0].py)
    ragged: list[tuple[np.ndarray, int]] = [(np.empty(0), 0)] * n
    for part, pos in zip(parts, positions):
        for j, i in enumerate(pos.tolist()):
            ragged[i] = part.item(j)
    return ValueBatch(ragged=ragged)


def _output(values: ValueBatch, as_array: bool) -> list[Any] | np.ndarray:
    """What a read returns: the user-facing values, or one stacked array."""
    if not as_array:
        return values.to_list()
    if values.dense is not None:
        return values.dense
    arrays = [a for a, _ in values.ragged]
    if not arrays:
        return np.empty(0)
    if any(a.dtype != arrays[0].dtype or a.shape != arrays[0].shape for a in arrays):
        raise ValueError("as_array needs values of one dtype and shape")
    return np.stack(arrays)
