"""Asynchronous requests to the parameter servers for one streaming worker.

``ParamClient.call`` sends a batch of requests and waits for their replies; a streaming worker
must keep taking input while its pulls are in flight, so this module sends requests with the
same wire format (``paracel.wire``, ``paracel.protocol``) and collects their replies whenever
the worker polls. A server answers one worker's requests in the order it got them and MPI keeps
the messages between two ranks in order, so each server's replies match a FIFO of what was
sent to it. While requests are in flight the worker must not use its ``ParamClient`` (whose
``call`` would take these replies for its own): the streaming runner drains them first.

Requests go out without blocking: a server that is sending this worker a large reply takes
no new request that changes its table until the reply has gone, so a worker blocked in a send
while it takes no replies would deadlock with it.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Sequence

from mpi4py import MPI

from paracel.batch import Key, KeyBatch, ValueBatch
from paracel.client import split
from paracel.errors import RequestTimeout
from paracel.layout import Layout
from paracel.protocol import ErrorReply, Flush, Pull, Reply, Request, Update
from paracel.ring import KeyRing
from paracel.waiting import Backoff
from paracel.wire import TAG_REPLY, TAG_REQUEST, Receiver, Sends

#: ``on_values(positions, values)``: what to do with the values of some pulled keys (their
#: positions in the keys asked for, and their values in that order).
OnValues = Callable[[list[int], list[Any]], None]
#: ``on_ack()``: run once a server has answered a ``Flush``.
OnAck = Callable[[], None]


class AsyncParams:
    """Pulls answered whenever the worker polls, updates sent without waiting, flushes to
    learn when updates are applied.

    ``timeout``: seconds without any reply, while some are due, before ``wait`` raises
    ``RequestTimeout`` (None: wait for ever).
    """

    def __init__(self, comm: MPI.Comm, layout: Layout, timeout: float | None = None) -> None:
        self.comm, self.layout, self.timeout = comm, layout, timeout
        self.ring = KeyRing(layout.nservers)
        self.receiver = Receiver(comm)
        self.status = MPI.Status()
        self._due: dict[int, deque[tuple[Request, Callable[[Reply], None]]]] = {}
        self.in_flight = 0  # requests sent and not yet answered
        self._sends = Sends()  # requests MPI may still read
        self._updated: set[int] = set()  # servers sent updates since the last flush

    def _send(self, rank: int, request: Request, on_reply: Callable[[Reply], None] | None) -> None:
        self._sends.post(self.comm, rank, TAG_REQUEST, *request.encode())
        if on_reply is not None:
            self._due.setdefault(rank, deque()).append((request, on_reply))
            self.in_flight += 1

    def pull(self, keys: Sequence[Key], on_values: OnValues) -> int:
        """Ask for the values of ``keys`` (one request per server holding some); ``on_values``
        runs at a later ``poll`` for each server's share. Returns the number of requests sent."""
        shares = split(self.ring, self.layout, KeyBatch.of(list(keys)))
        for share in shares:
            self._send(share.rank, Pull(share.keys),
                       lambda reply, at=share.positions.tolist(): on_values(at, reply.values.to_list()))
        return len(shares)

    def update(self, keys: Sequence[Key], deltas: Sequence[Any], fn: str) -> None:
        """Send ``fn(old, delta)`` updates without waiting (failures surface at the next ``flush``).

        Deltas of several dtypes or shapes go as one batch per signature (in the order of each
        signature's first delta), so that a server applies each batch as one vector operation.
        """
        values = ValueBatch.of(list(deltas), len(keys))
        if values.dense is None:
            signatures: dict[tuple[str, tuple[int, ...], int], list[int]] = {}
            for i, (array, py) in enumerate(values.ragged):
                signatures.setdefault((array.dtype.str, array.shape, py), []).append(i)
            if len(signatures) > 1:
                for where in signatures.values():
                    self.update([keys[i] for i in where], [deltas[i] for i in where], fn)
                return
        for share in split(self.ring, self.layout, KeyBatch.of(list(keys)), values):
            self._send(share.rank, Update(share.keys, share.values, fn, wait_applied=False), None)
            self._updated.add(share.rank)

    def flush(self, on_ack: OnAck) -> int:
        """Ask every server sent updates since the last flush to answer once it has applied
        them; ``on_ack`` runs at the ``poll`` that gets all the answers. Returns the requests sent."""
        ranks, self._updated = sorted(self._updated), set()
        if not ranks:
            on_ack()
            return 0
        remaining = [len(ranks)]

        def one_ack(_: Reply) -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                on_ack()
        for rank in ranks:
            self._send(rank, Flush(), one_ack)
        return len(ranks)

    def poll(self) -> int:
        """Take every reply that has arrived and run its callback; returns how many.

        Raises the exception an error reply stands for (``ServerError``, ``RemoteKeyError``...).
        """
        self._sends.progress()
        handled = 0
        while self.in_flight and self.comm.Iprobe(MPI.ANY_SOURCE, TAG_REPLY, self.status):
            source = self.status.Get_source()
            header = self.receiver.header(self.status)
            buffers = self.receiver.payload(source, header, reuse=False)
            request, on_reply = self._due[source].popleft()
            self.in_flight -= 1
            reply = request.read_reply(header, buffers)
            if isinstance(reply, ErrorReply):
                raise reply.exception(f"{self.layout.role(source)} rank {source}")
            on_reply(reply)
            handled += 1
        return handled

    def wait(self) -> int:
        """``poll`` until at least one reply is handled (nothing to wait for: returns 0)."""
        backoff, since = Backoff(), time.monotonic()
        while self.in_flight:
            handled = self.poll()
            if handled:
                return handled
            if self.timeout is not None and time.monotonic() - since > self.timeout:
                raise RequestTimeout(f"no server answered any of {self.in_flight} requests within "
                                     f"{self.timeout:g} s (config 'request_timeout')")
            backoff.pause()
        return 0

    def drain(self) -> None:
        """Wait for every reply due and for every request to have gone out."""
        while self.in_flight:
            self.wait()
        self._sends.wait()
