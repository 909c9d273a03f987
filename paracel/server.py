"""The parameter-server rank: an event loop over a dispatch table of request handlers."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from mpi4py import MPI

from paracel.errors import RemoteKeyError
from paracel.table import Table
from paracel.waiting import Backoff
from paracel.wire import TAG_REPLY, TAG_REQUEST, KeyBatch, PendingSend, Receiver, ValueBatch

Reply = tuple[dict[str, Any], list[np.ndarray]]
#: Operations that leave the table unchanged (their replies may still be in flight).
READ_ONLY = frozenset({"pull", "contains", "items", "topk", "flush"})


class ServerState:
    """A server's table plus per-worker bookkeeping; ``handle`` runs one request (no MPI)."""

    def __init__(self, nworkers: int) -> None:
        self.table = Table()
        self.nworkers = nworkers
        self.finished: set[int] = set()
        self.deferred_errors: dict[int, list[str]] = {}
        self.handlers: dict[str, Callable[[int, dict[str, Any], list[np.ndarray]], Reply]] = {
            "pull": self.pull, "push": self.push, "update": self.update, "remove": self.remove,
            "contains": self.contains, "items": self.items, "topk": self.topk,
            "flush": self.flush, "done": self.done,
        }

    def handle(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply | None:
        """Run the request; returns the reply to send, or None for requests sent without ``ack``.

        A failing request becomes an error reply (or, without ``ack``, an error reported at the
        worker's next flush); the server itself keeps serving.
        """
        try:
            handler = self.handlers.get(header.get("op"))
            if handler is None:
                raise ValueError(f"unknown server operation {header.get('op')!r}")
            reply = handler(source, header, buffers)
        except Exception as exc:  # any request failure goes back to its caller
            message = str(exc) if isinstance(exc, RemoteKeyError) else f"{type(exc).__name__}: {exc}"
            if not header.get("ack", True):
                self.deferred_errors.setdefault(source, []).append(f"batched {header.get('op')}: {message}")
                return None
            kind = "KeyError" if isinstance(exc, RemoteKeyError) else "ServerError"
            return {"ok": False, "etype": kind, "error": message}, []
        if not header.get("ack", True):
            return None
        reply_header, reply_buffers = reply
        reply_header["ok"] = True
        return reply_header, reply_buffers

    def pull(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        keys, _ = KeyBatch.from_wire(header, buffers)
        values = self.table.read(keys)
        return values.header(), values.buffers()

    def landing(self, header: dict[str, Any]) -> Callable[[int, list[np.ndarray]], np.ndarray | None] | None:
        """For a one-key push whose key holds a value of the same dtype and shape: receive the
        new value straight into the table row (saves a copy of what may be a large array)."""
        if header.get("op") != "push" or header.get("n") != 1 or "vd" not in header:
            return None
        value_index = 1 if header["kk"] == "i" else 2

        def target(index: int, received: list[np.ndarray]) -> np.ndarray | None:
            if index != value_index:
                return None
            keys, _ = KeyBatch.from_wire(header, received)
            row = self.table.row_bytes(keys, header["vd"], header["vs"], header["vp"])
            header["in_place"] = row is not None
            return row
        return target

    def push(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        if header.get("in_place"):
            return {}, []
        keys, rest = KeyBatch.from_wire(header, buffers)
        self.table.write(keys, ValueBatch.from_wire(header, rest, len(keys)))
        return {}, []

    def update(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        keys, rest = KeyBatch.from_wire(header, buffers)
        self.table.update(keys, ValueBatch.from_wire(header, rest, len(keys)), header["fn"])
        return {}, []

    def remove(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        keys, _ = KeyBatch.from_wire(header, buffers)
        return {"count": self.table.remove(keys)}, []

    def contains(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        keys, _ = KeyBatch.from_wire(header, buffers)
        return {}, [self.table.contains(keys).view(np.uint8)]

    def items(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        return self._pairs(*self.table.items(header["kind"], header.get("prefix")))

    def topk(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        return self._pairs(*self.table.topk(header["k"], header["kind"], header.get("prefix")))

    @staticmethod
    def _pairs(keys: KeyBatch, values: ValueBatch) -> Reply:
        return {**keys.header(), **values.header()}, keys.buffers() + values.buffers()

    def flush(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        errors = self.deferred_errors.pop(source, [])
        if errors:
            raise RuntimeError("; ".join(errors))
        return {}, []

    @property
    def all_done(self) -> bool:
        """Whether every worker has said it is done."""
        return len(self.finished) == self.nworkers

    def done(self, source: int, header: dict[str, Any], buffers: list[np.ndarray]) -> Reply:
        self.finished.add(source)
        return {}, []


def serve(comm: MPI.Comm, nworkers: int) -> ServerState:
    """Serve requests until every worker has said it is done; returns the final state."""
    state = ServerState(nworkers)
    receiver = Receiver(comm)
    status = MPI.Status()
    backoff = Backoff()
    sending: list[PendingSend] = []
    while not state.all_done or sending:
        if sending:  # a reply in flight needs this rank's progress, and counts as activity
            sending = [s for s in sending if not s.done()]
            backoff.reset()
        if not comm.Iprobe(MPI.ANY_SOURCE, TAG_REQUEST, status):
            if not sending:
                backoff.pause()
            continue
        backoff.reset()
        source = status.Get_source()
        header = receiver.header(status)
        if header.get("op") not in READ_ONLY:
            while sending:  # replies may be views of table rows: finish them before any change
                sending = [s for s in sending if not s.done()]
        payload = receiver.payload(source, header, reuse=True, landing=state.landing(header))
        reply = state.handle(source, header, payload)
        if reply is not None:
            sending.append(PendingSend(comm, source, TAG_REPLY, *reply))
    return state
