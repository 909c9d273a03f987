"""A worker's connection to the parameter servers and the clock: routing, batching, SSP cache."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from mpi4py import MPI

from paracel.errors import ParacelError, RemoteKeyError, ServerError
from paracel.layout import Layout
from paracel.ring import KeyRing
from paracel.waiting import probe
from paracel.wire import TAG_REPLY, TAG_REQUEST, Key, KeyBatch, Receiver, ValueBatch, send

Keys = Sequence[Key] | np.ndarray
#: A write of this many keys or more empties the whole read cache instead of key by key.
FORGET_ALL_FROM = 256


class ParamClient:
    """Talks to the servers for one worker and keeps its clock (DESIGN §3).

    Updates are stamped with the worker's clock; ``commit`` flushes them (every server has
    applied them) before ticking, then waits while the worker is more than ``staleness`` clocks
    ahead of the slowest. Reads are served from a local cache while the cached copy is fresh
    enough for the bound (never under ASP, ``staleness=None``).
    """

    def __init__(self, comm: MPI.Comm, layout: Layout, staleness: int | None, cache: bool = True) -> None:
        self.comm = comm
        self.layout = layout
        self.staleness = staleness
        self.ring = KeyRing(layout.nservers)
        self.receiver = Receiver(comm)
        self.status = MPI.Status()
        self.clock = 0
        self.known_min = 0
        self.use_cache = cache and staleness is not None
        self._cache: dict[Key, tuple[int, ValueBatch, int]] = {}  # key -> (stamp, batch, row)
        self._unflushed: set[int] = set()

    # -- messaging
    def _send(self, server: int, header: dict[str, Any], buffers: list[np.ndarray]) -> None:
        send(self.comm, self.layout.server_rank(server), TAG_REQUEST, header, buffers)

    def _receive(self, rank: int) -> tuple[dict[str, Any], list[np.ndarray]]:
        probe(self.comm, rank, TAG_REPLY, self.status)
        header = self.receiver.header(self.status)
        return header, self.receiver.payload(rank, header, reuse=False)

    def _call(self, requests: list[tuple[int, dict[str, Any], list[np.ndarray]]]) -> list[tuple[dict, list]]:
        """Send one request per server, then collect every reply; raises the first error."""
        for server, header, buffers in requests:
            self._send(server, header, buffers)
        replies = [self._receive(self.layout.server_rank(server)) for server, _, _ in requests]
        for (server, _, _), (header, _) in zip(requests, replies):
            if not header["ok"]:
                if header["etype"] == "KeyError":
                    raise RemoteKeyError(header["error"])
                raise ServerError(f"server rank {self.layout.server_rank(server)}: {header['error']}")
        return replies

    def _per_server(self, op: str, keys: KeyBatch, values: ValueBatch | None = None,
                    **fields: Any) -> tuple[list[tuple[int, dict, list]], list[np.ndarray]]:
        requests, positions = [], []
        for server, where in self.ring.split(keys):
            part = keys if len(where) == len(keys) else keys.take(where)
            header, buffers = {"op": op, **part.header(), **fields}, part.buffers()
            if values is not None:
                vals = values if len(where) == len(values) else values.take(where)
                header.update(vals.header())
                buffers = buffers + vals.buffers()
            requests.append((server, header, buffers))
            positions.append(where)
        return requests, positions

    # -- reads
    def read(self, keys: Keys | Key, as_array: bool = False) -> list[Any] | np.ndarray:
        """Values of ``keys`` (a list, or with ``as_array`` one array of shape (n, *shape)).

        Raises ``RemoteKeyError`` naming absent keys, ``ValueError`` if ``as_array`` is asked of
        values that differ in dtype or shape.
        """
        batch = KeyBatch.of(keys)
        names = batch.to_list() if self.use_cache else None
        if names and self._cache:
            values = self._cached(names)
            if values is not None:
                return _output(values, as_array)
        stamp = self.known_min
        requests, positions = self._per_server("pull", batch)
        replies = self._call(requests)
        parts = [ValueBatch.from_wire(h, bufs, len(pos)) for (h, bufs), pos in zip(replies, positions)]
        values = _combine(parts, positions, len(batch))
        if names:
            private = values.take(np.arange(len(values)))  # a copy the user cannot modify
            self._cache.update(zip(names, ((stamp, private, i) for i in range(len(names)))))
        return _output(values, as_array)

    def _cached(self, names: list[Key]) -> ValueBatch | None:
        """The cached values of ``names`` if every one is fresh enough for SSP rule 1."""
        fresh = self.clock - self.staleness
        hits = [self._cache.get(k) for k in names]
        if not all(h is not None and h[0] >= fresh for h in hits):
            return None
        store = hits[0][1]
        if all(h[1] is store for h in hits):  # one earlier read: a single gather
            return store.take(np.fromiter((h[2] for h in hits), dtype=np.int64, count=len(hits)))
        return ValueBatch(ragged=[(np.array(h[1].item(h[2])[0]), h[1].item(h[2])[1]) for h in hits])

    def contains(self, keys: Keys | Key) -> np.ndarray:
        """Bool array: which keys some server holds."""
        batch = KeyBatch.of(keys)
        requests, positions = self._per_server("contains", batch)
        out = np.zeros(len(batch), dtype=bool)
        for (_, bufs), pos in zip(self._call(requests), positions):
            out[pos] = bufs[0].view(bool)
        return out

    def _gather(self, op: str, **fields: Any) -> tuple[list[Key], list[Any]]:
        keys: list[Key] = []
        values: list[Any] = []
        for kind in ("s",) if fields.get("prefix") is not None else ("i", "s"):
            requests = [(s, {"op": op, "kind": kind, **fields}, []) for s in range(self.layout.nservers)]
            for header, bufs in self._call(requests):
                part, rest = KeyBatch.from_wire(header, bufs)
                keys += part.to_list()
                values += ValueBatch.from_wire(header, rest, header["n"]).to_list()
        return keys, values

    def items(self, prefix: str | None = None) -> dict[Key, Any]:
        """Every key (or every str key starting with ``prefix``) and its value."""
        return dict(zip(*self._gather("items", prefix=prefix)))

    def topk(self, k: int, prefix: str | None = None) -> list[tuple[Key, Any]]:
        """The ``k`` (key, value) pairs with the largest scalar values, largest first
        (ties: the smaller key first; int keys sort before str keys)."""
        keys, values = self._gather("topk", k=k, prefix=prefix)
        pairs = sorted(zip(keys, values), key=lambda kv: (-kv[1], isinstance(kv[0], str), kv[0]))
        return pairs[:k]

    # -- writes
    def _forget(self, batch: KeyBatch) -> None:
        """Drop cached copies of keys this worker changes (read-my-writes)."""
        if not self._cache:
            return
        if len(batch) >= FORGET_ALL_FROM:  # cheaper than a lookup per key, and as correct
            self._cache.clear()
            return
        for k in batch.to_list():
            self._cache.pop(k, None)

    def write(self, keys: Keys | Key, values: Sequence[Any] | np.ndarray) -> None:
        """Store ``values`` under ``keys``; returns once every server has stored them."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        self._call(self._per_server("push", batch, ValueBatch.of(values, len(batch)))[0])

    def update(self, keys: Keys | Key, deltas: Sequence[Any] | np.ndarray, fn: str = "add",
               wait_applied: bool = True) -> None:
        """Apply ``fn(old, delta)`` on the servers; without ``wait_applied`` return at once
        (errors then surface at the next flush)."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        requests, _ = self._per_server("update", batch, ValueBatch.of(deltas, len(batch)), fn=fn,
                                       ack=wait_applied)
        if wait_applied:
            self._call(requests)
            return
        for server, header, buffers in requests:
            self._send(server, header, buffers)
            self._unflushed.add(server)

    def remove(self, keys: Keys | Key) -> int:
        """Delete ``keys``; returns how many existed."""
        batch = KeyBatch.of(keys)
        self._forget(batch)
        requests, _ = self._per_server("remove", batch)
        return sum(h["count"] for h, _ in self._call(requests))

    # -- clocks
    def flush(self) -> None:
        """Return once every batched update sent so far has been applied by its server."""
        if self._unflushed:
            servers, self._unflushed = sorted(self._unflushed), set()
            self._call([(s, {"op": "flush"}, []) for s in servers])

    def _ask_clock(self, op: str) -> None:
        send(self.comm, self.layout.clock_rank, TAG_REQUEST, {"op": op})
        probe(self.comm, self.layout.clock_rank, TAG_REPLY, self.status)
        reply = self.receiver.header(self.status)
        if not reply["ok"]:
            raise ParacelError(reply["error"])
        self.known_min = max(self.known_min, reply["min"])

    def commit(self) -> None:
        """End this worker's clock: flush, tick, and wait while too far ahead (SSP rule 2)."""
        self.flush()
        self.clock += 1
        self._ask_clock("tick")
        if self._cache:
            fresh = self.clock - self.staleness
            self._cache = {k: e for k, e in self._cache.items() if e[0] >= fresh}

    def sync(self) -> None:
        """Barrier of all workers, after which every worker's updates are visible to all.

        Raises ``ParacelError`` if some worker has already returned from ``solve()``.
        """
        self.flush()
        self._ask_clock("sync")
        self._cache.clear()

    def finish(self) -> None:
        """Tell the servers and the clock that this worker is done (after a final flush)."""
        self.flush()
        for server in range(self.layout.nservers):
            self._send(server, {"op": "done", "ack": False}, [])
        send(self.comm, self.layout.clock_rank, TAG_REQUEST, {"op": "done"})


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
