"""A worker's connection to the parameter servers and the clock: routing, batching, SSP cache."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from mpi4py import MPI

from paracel.batch import INT_KEYS, STR_KEYS, Key, KeyBatch, ValueBatch
from paracel.cache import ReadCache
from paracel.errors import ParacelError
from paracel.layout import Layout
from paracel.protocol import (Contains, Done, ErrorReply, Flush, Items, Pull, Push, Remove, Reply, Request, Sync, Tick,
                              TopK, Update)
from paracel.ring import KeyRing
from paracel.waiting import BUSY, Backoff, probe
from paracel.wire import TAG_REPLY, TAG_REQUEST, Receiver, Sends, receiver_driven

Keys = Sequence[Key] | np.ndarray
#: Bytes of batched updates a worker may have in flight before the next one waits for the servers.
IN_FLIGHT = 64 << 20


class Share(NamedTuple):
    """The part of a batch that one server holds."""

    rank: int
    positions: np.ndarray  # of its keys in the batch
    keys: KeyBatch
    values: ValueBatch | None


def split(ring: KeyRing, layout: Layout, keys: KeyBatch, values: ValueBatch | None = None) -> list[Share]:
    """The share of ``keys`` (and ``values``) of every server that holds some of them."""
    shares = []
    for server, where in ring.split(keys):
        whole = len(where) == len(keys)
        shares.append(Share(layout.server_rank(server), where, keys if whole else keys.take(where),
                            values if whole or values is None else values.take(where)))
    return shares


class ParamClient:
    """Talks to the servers for one worker and keeps its clock (DESIGN §3).

    Updates are stamped with the worker's clock; ``commit`` flushes them (every server has
    applied them; a read flushes the servers it asks on its way) before ticking, then waits while
    the worker is more than ``staleness`` clocks ahead of the slowest. Reads are served from a
    local cache while the cached copy is fresh enough for the bound (never under ASP,
    ``staleness=None``).
    """

    def __init__(self, comm: MPI.Comm, layout: Layout, staleness: int | None, cache: bool = True,
                 request_timeout: float | None = None) -> None:
        self.comm = comm
        self.request_timeout = request_timeout  # seconds a server's reply may take (None: no limit)
        self.layout = layout
        self.staleness = staleness
        self.ring = KeyRing(layout.nservers)
        self.receiver = Receiver(comm)
        self.sends = Sends()
        #: Batched updates return before the servers take them (they need no call of this rank's).
        self.returns_early = receiver_driven(comm)
        self.status = MPI.Status()
        self.clock = 0
        self.known_min = 0
        self.use_cache = cache and staleness is not None
        self.cache = ReadCache()
        self._unflushed: set[int] = set()  # servers sent batched updates since their last flush
        self._failed: ParacelError | None = None  # a flush's failure, raised by the next flush()

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
        return self._raise_errors(calls, self._exchange(calls))

    def _raise_errors(self, calls: Sequence[tuple[int, Request]], replies: list[Reply]) -> list[Reply]:
        """``replies`` (to those of ``calls`` that await one), unless one is an error: then its exception."""
        for (rank, _), reply in zip([c for c in calls if c[1].awaits_reply], replies):
            if isinstance(reply, ErrorReply):
                raise reply.exception(f"{self.layout.role(rank)} rank {rank}")
        return replies

    def _flushing(self, calls: Sequence[tuple[int, Request]], ranks: set[int]) -> list[Reply]:
        """``_exchange`` of ``calls`` after a ``Flush`` to each of ``ranks`` (servers take requests in
        order, so their batched updates are applied before ``calls`` are served); the first flush
        that fails is kept for ``flush()`` to raise. Returns the replies of ``calls``."""
        flushed = sorted(ranks)
        self._unflushed -= ranks
        replies = self._exchange([(rank, Flush()) for rank in flushed] + list(calls))
        for rank, reply in zip(flushed, replies):
            if isinstance(reply, ErrorReply) and self._failed is None:
                self._failed = reply.exception(f"{self.layout.role(rank)} rank {rank}")
        return replies[len(flushed):]

    def _exchange(self, calls: Sequence[tuple[int, Request]]) -> list[Reply]:
        """``call`` without raising: the replies (``ErrorReply`` too) of the requests that await one.

        Every request is posted at once without blocking; a request that awaits no reply (a
        batched update) may still be in flight on return: its buffers must not change (see
        ``_detached``), and it moves on at the next call, at the latest in ``finish``. A reply
        that does not come within ``request_timeout`` raises ``RequestTimeout``, saying whether
        the rank did not take the request or did not answer it.
        """
        usage = self.usage  # paracel.usage.Usage, attached with the worker's algorithm
        started = usage.start_call(calls)
        self.sends.progress()
        posted = []
        for rank, request in calls:
            header, buffers = request.encode()
            usage.sent(rank, request, buffers)
            posted.append(self.sends.post(self.comm, rank, TAG_REQUEST, header, buffers))
        received = []
        for (rank, request), sending in zip(calls, posted):
            if not request.awaits_reply:
                continue
            timeout = None if rank == self.layout.clock_rank else self.request_timeout  # SSP waits have no limit
            probe(self.comm, rank, TAG_REPLY, self.status, timeout,
                  lambda: f"{self.layout.role(rank)} rank {rank} did not {'answer' if sending.done() else 'take'} "
                          f"{request.op}",
                  None if self.returns_early or not len(self.sends) else Backoff(spin=BUSY))  # sends need our calls
            header = self.receiver.header(self.status)
            payload = self.receiver.payload(rank, header, reuse=False)
            usage.received(rank, payload)
            received.append(request.read_reply(header, payload))
        usage.end_call(started, calls)
        return received

    def _split(self, keys: KeyBatch, values: ValueBatch | None = None) -> list[Share]:
        return split(self.ring, self.layout, keys, values)

    # -- reads
    def read(self, keys: Keys | Key, as_array: bool = False) -> list[Any] | np.ndarray:
        """Values of ``keys`` (a list, or with ``as_array`` one array of shape (n, *shape)).

        Keys cached fresh enough for SSP rule 1 are served from the cache; only the others are
        pulled. Raises ``RemoteKeyError`` naming absent keys, ``ValueError`` if ``as_array`` is
        asked of values that differ in dtype or shape.
        """
        batch = KeyBatch.of(keys)
        if not self.use_cache:
            stamp = self.known_min
            values = self._pull(batch)
            self._saw(batch, stamp)
            return _output(values, as_array)
        slots = self.cache.slots(batch)
        stamps = self.cache.stamps_at(slots)
        hit = stamps >= self.clock - self.staleness
        nhit = int(np.count_nonzero(hit))
        self.cache.hits += nhit
        self.cache.misses += len(batch) - nhit
        if nhit == len(batch):
            self._saw(batch, int(stamps.min(initial=self.clock)))
            return _output(self.cache.values(slots), as_array)
        missing = batch if nhit == 0 else batch.take(np.flatnonzero(~hit))
        stamp = self.known_min
        values = self._pull(missing)
        self.cache.store(missing, values, stamp)
        if nhit:  # a partial hit: every value is in the cache now
            stamp = min(stamp, int(stamps[hit].min()))
            values = self.cache.values(self.cache.slots(batch))
        self._saw(batch, stamp)
        return _output(values, as_array)

    def _saw(self, batch: KeyBatch, stamp: int) -> None:
        """Count a read of ``batch`` whose oldest value is fresh from clock ``stamp`` (it holds
        every update stamped before it) in the staleness the reads saw."""
        if len(batch):
            self.usage.read(self.clock - stamp)

    def _pull(self, batch: KeyBatch) -> ValueBatch:
        """The values of ``batch`` from the servers, in order; flushes the servers it asks on the
        way (so that ``commit`` after the usual bupdate + read needs no round trip of its own)."""
        shares = self._split(batch)
        calls = [(share.rank, Pull(share.keys)) for share in shares]
        replies = self._raise_errors(calls, self._flushing(calls, self._unflushed & {rank for rank, _ in calls}))
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
        """Apply ``fn(old, delta)`` on the servers; without ``wait_applied`` return before they
        apply it (errors then surface at the next flush): at once where MPI needs no call of this
        rank's to deliver it (``returns_early``), else once the servers have taken it, so that no
        server waits on a worker that computes."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        shares = self._split(batch, ValueBatch.of(deltas, len(batch)))
        early = not wait_applied and self.returns_early
        if early:  # in flight while the caller goes on, who may change its arrays
            shares = [_detached(share, keys, deltas) for share in shares]
        self.call([(share.rank, Update(share.keys, share.values, fn, wait_applied)) for share in shares])
        if not wait_applied:
            self._unflushed.update(share.rank for share in shares)
        if not (wait_applied or early and self.sends.nbytes() < IN_FLIGHT):
            self.sends.wait(self.request_timeout, lambda: "a server did not take a batched update")

    def remove(self, keys: Keys | Key) -> int:
        """Delete ``keys``; returns how many existed."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        replies = self.call([(share.rank, Remove(share.keys)) for share in self._split(batch)])
        return sum(reply.count for reply in replies)

    # -- clocks
    def flush(self) -> None:
        """Return once every batched update sent so far has been applied by its server; raises
        the failure of any of them (``ServerError``, ``ParacelError``)."""
        if self._unflushed:
            self._flushing([], self._unflushed)
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

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
        self.sends.wait(self.request_timeout, lambda: f"{len(self.sends)} message(s) to the servers and the clock "
                                                      f"were not taken")


def _detached(share: Share, keys: Any, deltas: Any) -> Share:
    """``share`` with copies of its key and value arrays where they may share memory with the
    caller's ``keys`` or ``deltas`` (an array, or the one value of a list)."""
    ints, dense = _owned(share.keys.ints, keys), _owned(share.values.dense, deltas)
    keys_ = share.keys if ints is share.keys.ints else KeyBatch(ints=ints)
    values = share.values if dense is share.values.dense else ValueBatch(dense=dense, py=share.values.py)
    return share._replace(keys=keys_, values=values)


def _owned(arr: np.ndarray | None, given: Any) -> np.ndarray | None:
    """``arr``, or a copy of it if it may share memory with ``given``."""
    if isinstance(given, (list, tuple)) and len(given) == 1:
        given = given[0]
    if arr is not None and isinstance(given, np.ndarray) and np.may_share_memory(arr, given):
        return arr.copy()
    return arr


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
