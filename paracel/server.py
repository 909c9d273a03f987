"""The parameter-server rank: its shard of the table and the handlers of its operations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from mpi4py import MPI

from paracel.batch import KeyBatch
from paracel.errors import MessageError
from paracel.checkpoint import save_shard
from paracel.protocol import (Ack, Contains, Count, Done, ErrorReply, Flush, Items, Mask, Pairs, Pull, Push, Remove,
                              Save, TopK, Update, Values, op_of)
from paracel.service import Service, handles, run_service
from paracel.table import ShardTable
from paracel.wire import Header, Landing


class ServerState(Service):
    """A server's shard of the table plus per-worker bookkeeping."""

    name = "server"

    def __init__(self, nworkers: int) -> None:
        self.table = ShardTable()
        self.nworkers = nworkers
        self.signed_off: set[int] = set()
        self.deferred_errors: dict[int, list[str]] = {}

    @property
    def finished(self) -> bool:
        """Whether every worker has said it is done."""
        return len(self.signed_off) == self.nworkers

    def landing(self, header: Header) -> Landing | None:
        """For a one-key push whose key holds a value of the same signature: receive the new
        value straight into the table row (saves a copy of what may be a large array)."""
        try:
            lone = Push.lone_value(header) if op_of(header) == Push.op else None
        except (MessageError, KeyError, TypeError):  # malformed: decoding the request reports it
            return None
        if lone is None:
            return None
        value_index, signature = lone

        def target(index: int, received: list[np.ndarray]) -> np.ndarray | None:
            if index != value_index:
                return None
            try:
                keys, _ = KeyBatch.from_wire(header, received)
            except MessageError:
                return None
            return self.table.row_bytes(keys, signature)
        return target

    def unanswerable(self, source: int, op: str | None, error: ErrorReply) -> None:
        """Keep the failure of a batched request for the worker's next ``Flush``."""
        self.deferred_errors.setdefault(source, []).append(f"batched {op}: {error.message}")

    @handles(Pull, read_only=True)
    def pull(self, source: int, request: Pull) -> Values:
        return Values(self.table.read(request.keys))

    @handles(Push)
    def push(self, source: int, request: Push) -> Ack:
        self.table.write(request.keys, request.values)
        return Ack()

    @handles(Update)
    def update(self, source: int, request: Update) -> Ack:
        self.table.update(request.keys, request.deltas, request.fn)
        return Ack()

    @handles(Remove)
    def remove(self, source: int, request: Remove) -> Count:
        return Count(self.table.remove(request.keys))

    @handles(Contains, read_only=True)
    def contains(self, source: int, request: Contains) -> Mask:
        return Mask(self.table.contains(request.keys))

    @handles(Items, read_only=True)
    def items(self, source: int, request: Items) -> Pairs:
        return Pairs(*self.table.items(request.kind, request.prefix))

    @handles(TopK, read_only=True)
    def topk(self, source: int, request: TopK) -> Pairs:
        return Pairs(*self.table.topk(request.k, request.kind, request.prefix))

    @handles(Flush, read_only=True)
    def flush(self, source: int, request: Flush) -> Ack:
        errors = self.deferred_errors.pop(source, [])
        if errors:
            raise RuntimeError("; ".join(errors))
        return Ack()

    @handles(Save, read_only=True)
    def save(self, source: int, request: Save) -> Ack:
        save_shard(self.table, Path(request.path))
        return Ack()

    @handles(Done)
    def done(self, source: int, request: Done) -> Ack:
        self.signed_off.add(source)
        return Ack()


def serve(comm: MPI.Comm, nworkers: int) -> ServerState:
    """Serve requests until every worker has said it is done; returns the final state."""
    state = ServerState(nworkers)
    run_service(comm, state)
    return state
