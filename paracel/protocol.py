"""The protocol of the server and clock ranks, defined once (ps-lite's ``Meta``).

A request is an instance of one of the request classes below: ``op`` names its operation, its
fields are what the handler gets, and ``answer`` is the reply class that answers it. A reply is
an instance of a reply class, or an ``ErrorReply`` (the error envelope), which the caller turns
into the exception it stands for. ``encode`` gives the header and buffers that
``paracel.wire`` frames, ``decode`` is its inverse; a class's ``scalars`` and ``batches`` say
how its fields travel. Header fields are compact on the wire and named once, here (a batch's
own fields are named in ``paracel.batch``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from paracel.batch import COUNT, KEY_BUFFERS, KEY_KIND, KeyBatch, Signature, ValueBatch
from paracel.errors import ParacelError, RemoteKeyError, ServerError
from paracel.wire import Header

Message = tuple[Header, list[np.ndarray]]

# Header fields of requests ...
OP = "op"
AWAITS_REPLY = "ack"  # absent means True
FUNCTION = "fn"
SCAN_KIND = "kind"
PREFIX = "prefix"
TOP_K = "k"
USAGE = "use"
STEP = "step"
METRICS = "vals"
TOTAL = "total"
PATH = "path"
# ... and of replies.
OK = "ok"
REMOVED = "count"
MIN_CLOCK = "min"
ERROR_KIND = "etype"
ERROR_MESSAGE = "error"
PROTOCOL_FIELDS = frozenset({OP, AWAITS_REPLY, FUNCTION, SCAN_KIND, PREFIX, TOP_K, USAGE, STEP, METRICS, TOTAL, PATH,
                             OK, REMOVED, MIN_CLOCK, ERROR_KIND, ERROR_MESSAGE})


def op_of(header: Header) -> str | None:
    """The operation a request header names (None if it names none)."""
    op = header.get(OP)
    return op if isinstance(op, str) else None


def awaits_reply(header: Header) -> bool:
    """Whether the sender of a request header waits for a reply."""
    return header.get(AWAITS_REPLY, True)


def _put_batches(header: Header, *batches: KeyBatch | ValueBatch) -> list[np.ndarray]:
    """Describe ``batches`` in ``header``; returns their buffers, in order."""
    buffers: list[np.ndarray] = []
    for batch in batches:
        header.update(batch.header())
        buffers += batch.buffers()
    return buffers


class _Codec:
    """How a request or reply travels: the attributes named in ``batches`` (keys, then values)
    as buffers, and those named in ``scalars`` as their header fields. The dataclass declares
    its fields in that order: batches first, then scalars."""

    batches: ClassVar[tuple[str, ...]] = ()
    scalars: ClassVar[dict[str, str]] = {}

    def _put(self, header: Header) -> list[np.ndarray]:
        """Add this message's fields to ``header``; returns its buffers."""
        for attr, field in self.scalars.items():
            header[field] = getattr(self, attr)
        return _put_batches(header, *[getattr(self, attr) for attr in self.batches])

    @classmethod
    def decode(cls, header: Header, buffers: list[np.ndarray]) -> Any:
        """The message that ``header`` and ``buffers`` carry."""
        scalars = [header[field] for field in cls.scalars.values()]
        if not cls.batches:
            return cls(*scalars)
        keys, rest = KeyBatch.from_wire(header, buffers)
        if len(cls.batches) == 1:
            return cls(keys, *scalars)
        return cls(keys, ValueBatch.from_wire(header, rest, len(keys)), *scalars)


# ---------------------------------------------------------------------------- replies
class Reply(_Codec):
    """A reply to a request; a successful one unless it is an ``ErrorReply``."""

    ok: ClassVar[bool] = True

    def encode(self) -> Message:
        header: Header = {OK: self.ok}
        return header, self._put(header)


@dataclass
class Ack(Reply):
    """Done; nothing to return."""


@dataclass
class Values(Reply):
    """The values of the keys asked for, in their order."""

    values: ValueBatch

    def _put(self, header: Header) -> list[np.ndarray]:
        header[COUNT] = len(self.values)
        return _put_batches(header, self.values)

    @classmethod
    def decode(cls, header: Header, buffers: list[np.ndarray]) -> Values:
        return cls(ValueBatch.from_wire(header, buffers, header[COUNT]))


@dataclass
class Count(Reply):
    """How many of the keys asked for were there."""

    count: int
    scalars = {"count": REMOVED}


@dataclass
class Mask(Reply):
    """Bool array: which of the keys asked for are there."""

    present: np.ndarray

    def _put(self, header: Header) -> list[np.ndarray]:
        return [self.present.view(np.uint8)]

    @classmethod
    def decode(cls, header: Header, buffers: list[np.ndarray]) -> Mask:
        return cls(buffers[0].view(bool))


@dataclass
class Pairs(Reply):
    """Keys and their values."""

    keys: KeyBatch
    values: ValueBatch
    batches = ("keys", "values")


@dataclass
class Proceed(Reply):
    """The worker may go on; the slowest worker has reached ``min_clock``."""

    min_clock: int
    scalars = {"min_clock": MIN_CLOCK}


# What an error reply stands for, and the exception its caller raises.
MISSING_KEYS = "KeyError"  # RemoteKeyError: the message names the keys
REFUSED = "ParacelError"  # ParacelError: the request cannot be served (e.g. a barrier that cannot complete)
FAILED = "ServerError"  # ServerError: the request raised on the serving rank


@dataclass
class ErrorReply(Reply):
    """The error envelope: what went wrong (``MISSING_KEYS``, ``REFUSED`` or ``FAILED``) and why."""

    kind: str
    message: str
    ok = False
    scalars = {"kind": ERROR_KIND, "message": ERROR_MESSAGE}

    @classmethod
    def of(cls, exc: Exception) -> ErrorReply:
        """The reply that reports ``exc`` to the caller."""
        if isinstance(exc, RemoteKeyError):
            return cls(MISSING_KEYS, str(exc))
        if isinstance(exc, ParacelError):
            return cls(REFUSED, str(exc))
        return cls(FAILED, f"{type(exc).__name__}: {exc}")

    def exception(self, sender: str) -> ParacelError:
        """The exception the caller raises; ``sender`` (e.g. "server rank 3") prefixes failures."""
        if self.kind == MISSING_KEYS:
            return RemoteKeyError(self.message)
        if self.kind == REFUSED:
            return ParacelError(f"{sender}: {self.message}")
        return ServerError(f"{sender}: {self.message}")


# ---------------------------------------------------------------------------- requests
class Request(_Codec):
    """A request to a server or the clock rank, answered by an ``answer`` (or an ``ErrorReply``)."""

    op: ClassVar[str]
    answer: ClassVar[type[Reply]] = Ack

    @property
    def awaits_reply(self) -> bool:
        """Whether the sender waits for the reply (a request that does not gets none)."""
        return True

    def encode(self) -> Message:
        header: Header = {OP: self.op}
        if not self.awaits_reply:
            header[AWAITS_REPLY] = False
        return header, self._put(header)

    def read_reply(self, header: Header, buffers: list[np.ndarray]) -> Reply:
        """The reply to this request: an ``answer``, or an ``ErrorReply``."""
        return (self.answer if header[OK] else ErrorReply).decode(header, buffers)


@dataclass
class _KeysRequest(Request):
    keys: KeyBatch
    batches = ("keys",)


@dataclass
class Pull(_KeysRequest):
    """Read the values of ``keys``."""

    op = "pull"
    answer = Values


@dataclass
class Remove(_KeysRequest):
    """Delete ``keys``."""

    op = "remove"
    answer = Count


@dataclass
class Contains(_KeysRequest):
    """Which of ``keys`` are there."""

    op = "contains"
    answer = Mask


@dataclass
class Push(Request):
    """Store ``values`` under ``keys``."""

    keys: KeyBatch
    values: ValueBatch
    op = "push"
    batches = ("keys", "values")

    @staticmethod
    def lone_value(header: Header) -> tuple[int, Signature] | None:
        """For a push of one key and a dense value: the index of the value's buffer and its
        signature, so that a receiver can land it straight where the key's value lives."""
        signature = ValueBatch.dense_signature(header) if header[COUNT] == 1 else None
        return None if signature is None else (KEY_BUFFERS[header[KEY_KIND]], signature)


@dataclass
class Update(Request):
    """Apply ``fn(old, delta)`` to every key (an absent key stores its delta); without
    ``wait_applied`` the sender does not wait, and a failure is reported at its next ``Flush``."""

    keys: KeyBatch
    deltas: ValueBatch
    fn: str = "add"
    wait_applied: bool = True
    op = "update"
    batches = ("keys", "deltas")
    scalars = {"fn": FUNCTION, "wait_applied": AWAITS_REPLY}  # the envelope's field: the server reads it too

    @property
    def awaits_reply(self) -> bool:
        return self.wait_applied


@dataclass
class Items(Request):
    """Every key of ``kind`` (``INT_KEYS`` or ``STR_KEYS``; str keys only those starting with
    ``prefix``) and its value."""

    kind: str
    prefix: str | None = None
    op = "items"
    answer = Pairs
    scalars = {"kind": SCAN_KIND, "prefix": PREFIX}


@dataclass
class TopK(Items):
    """The ``k`` items with the largest scalar values."""

    k: int = 1
    op = "topk"
    scalars = {**Items.scalars, "k": TOP_K}


@dataclass
class Flush(Request):
    """Answered once the sender's earlier updates sent without waiting have been applied
    (with an error naming those that failed)."""

    op = "flush"


@dataclass
class Save(Request):
    """Write the server's shard of the table to the checkpoint file ``path``."""

    path: str
    op = "save"
    scalars = {"path": PATH}


@dataclass
class _ToClock(Request):
    """A request the clock rank may get: it carries the sender's ``usage`` so far (a
    ``paracel.usage.Usage.snapshot()``, filled in by the client; None elsewhere)."""

    usage: dict[str, Any] | None = None
    scalars = {"usage": USAGE}


@dataclass
class Done(_ToClock):
    """The sending worker has returned from ``solve()``; it waits for no reply."""

    op = "done"

    @property
    def awaits_reply(self) -> bool:
        return False


@dataclass
class Tick(_ToClock):
    """The sending worker ended its clock; answered once it may start the next (SSP rule 2)."""

    op = "tick"
    answer = Proceed


@dataclass
class Sync(_ToClock):
    """The sending worker entered the barrier of all workers; answered when all have."""

    op = "sync"
    answer = Proceed


@dataclass
class Report(_ToClock):
    """For the run's progress and record: a metrics row ``values`` of ``step`` that the sender
    logged, and/or the ``total`` clocks it will run; it waits for no reply."""

    step: int | None = None
    values: dict[str, Any] | None = None
    total: int | None = None
    op = "report"
    scalars = {**_ToClock.scalars, "step": STEP, "values": METRICS, "total": TOTAL}

    @property
    def awaits_reply(self) -> bool:
        return False


#: The operations each kind of rank serves.
SERVER_REQUESTS: tuple[type[Request], ...] = (Pull, Push, Update, Remove, Contains, Items, TopK, Flush, Save,
                                               Done)
CLOCK_REQUESTS: tuple[type[Request], ...] = (Tick, Sync, Done, Report)
