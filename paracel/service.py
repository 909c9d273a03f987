"""What the server and clock ranks share: a table of request handlers and one event loop.

A ``Service`` subclass marks its handler methods with ``@handles(RequestClass)``; its
``operations`` is then the ``{op: Operation}`` table the loop dispatches on (dask.distributed
style). ``Service.handle`` runs one request without MPI; ``run_service`` is the rank's loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
from mpi4py import MPI

from paracel.errors import MessageError, ParacelError
from paracel.protocol import ErrorReply, Reply, Request, awaits_reply, op_of
from paracel.waiting import BUSY, Backoff
from paracel.wire import TAG_REPLY, TAG_REQUEST, Header, Landing, Receiver, Sends

#: Replies addressed to ranks: ``[(rank, reply), ...]``.
Outbox = list[tuple[int, Reply]]


@dataclass(frozen=True)
class Operation:
    """How a service runs one operation: decode ``request``, call ``handler``."""

    request: type[Request]
    handler: Callable[..., Reply | Outbox]
    #: The handler changes nothing a reply may be a view of (a table row), so it may run while
    #: earlier replies are still in flight.
    read_only: bool


def handles(request: type[Request], read_only: bool = False) -> Callable[[Callable], Callable]:
    """Mark a ``Service`` method as the handler of ``request``'s operation.

    It is called as ``handler(self, source, request)`` and returns the reply to ``source``, or
    an ``Outbox`` when it answers other ranks too, or no one yet. ``read_only``: see ``Operation``.
    """
    def mark(method: Callable) -> Callable:
        method.operation = Operation(request, method, read_only)
        return method
    return mark


class Service(ABC):
    """A rank's state and the operations it serves."""

    #: Names the rank in error messages ("server", "clock").
    name: ClassVar[str]
    operations: ClassVar[dict[str, Operation]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        marked = [method.operation for method in vars(cls).values() if hasattr(method, "operation")]
        cls.operations = {operation.request.op: operation for operation in marked}

    @property
    @abstractmethod
    def finished(self) -> bool:
        """Whether the rank has nothing left to serve."""

    def landing(self, header: Header) -> Landing | None:
        """Where a request's payload buffers should land (None: anywhere)."""
        return None

    def read_only(self, header: Header) -> bool:
        """Whether the request's handler is read-only (see ``Operation``)."""
        operation = self.operations.get(op_of(header))
        return operation is not None and operation.read_only

    def handle(self, source: int, header: Header, payload: list[np.ndarray]) -> Outbox:
        """Decode and run the request from rank ``source``; returns the replies now due.

        A failing or unknown request becomes an error reply to ``source`` (or, if it waits for
        none, goes to ``unanswerable``); the rank keeps serving.
        """
        op, wants_reply = op_of(header), awaits_reply(header)
        try:
            operation = self.operations.get(op)
            if operation is None:
                raise ValueError(f"unknown {self.name} operation {op!r}")
            result = operation.handler(self, source, _decode(operation.request, header, payload))
        except Exception as exc:  # any request failure goes back to its caller
            if wants_reply:
                return [(source, ErrorReply.of(exc))]
            self.unanswerable(source, op, ErrorReply.of(exc))
            return []
        if isinstance(result, list):
            return result
        return [(source, result)] if wants_reply else []

    def unanswerable(self, source: int, op: str | None, error: ErrorReply) -> None:
        """A request whose sender waits for no reply failed: there is no one to tell, so by
        default this rank fails (and with it the job, loudly)."""
        raise ParacelError(f"{op!r} from rank {source}, which waits for no reply, failed: {error.message}")


def _decode(request: type[Request], header: Header, payload: list[np.ndarray]) -> Request:
    """The request that ``header`` and ``payload`` carry; raises ``MessageError`` if they carry none."""
    try:
        return request.decode(header, payload)
    except Exception as exc:  # a missing field, a buffer too few ...: the sender's bug, not this rank's
        why = str(exc) if isinstance(exc, MessageError) else f"{type(exc).__name__}: {exc}"
        raise MessageError(f"cannot decode a {request.op!r} request: {why}") from None


def run_service(comm: MPI.Comm, service: Service) -> None:
    """Answer requests until ``service.finished`` and every reply has gone out.

    Waits for requests with ``Iprobe`` and a back-off, and replies without blocking. A reply in
    flight needs this rank's progress (a large one moves only while the rank calls MPI), so
    while one is out the loop only yields its core, for up to ``BUSY`` seconds, before sleeping.
    A message that cannot be decoded is answered with an error reply (``MessageError``).
    """
    receiver = Receiver(comm)
    status = MPI.Status()
    idle, replying = Backoff(), Backoff(spin=BUSY)
    sends = Sends()
    while not service.finished or len(sends):
        if len(sends):
            sends.progress()
            if not len(sends):
                idle.reset()  # the last reply just went out: the next request often follows at once
        if not comm.Iprobe(MPI.ANY_SOURCE, TAG_REQUEST, status):
            (replying if len(sends) else idle).pause()
            continue
        idle.reset()
        source = status.Get_source()
        try:
            header = receiver.header(status)
        except MessageError as exc:  # its payload cannot be known: answer, and serve the next request
            sends.post(comm, source, TAG_REPLY, *ErrorReply.of(exc).encode())
            continue
        if len(sends) and not service.read_only(header):
            sends.progress()
            while len(sends):  # replies may be views of the state: let them go first
                replying.pause()
                sends.progress()
        payload = receiver.payload(source, header, reuse=True, landing=service.landing(header))
        outbox = service.handle(source, header, payload)
        if outbox:
            replying.reset()
        for dest, reply in outbox:
            sends.post(comm, dest, TAG_REPLY, *reply.encode())
