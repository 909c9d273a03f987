"""The user's side of a stream: a ``WorkerLogic`` reacts to records and to the values of the
keys it pulls through ``ParamAccess`` (the ``ps`` of its callbacks); ``GatherLogic`` is one for
records that each need the values of several keys at once.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Protocol, Sequence

from paracel.batch import Key


class ParamAccess(Protocol):
    """What a ``WorkerLogic`` may do: the ``ps`` of its callbacks."""

    def pull(self, key: Key) -> None:
        """Ask for ``key``'s value; it comes to ``on_pull_recv`` later and includes every push
        this worker made before (answers to one key come in the order asked)."""

    def push(self, key: Key, delta: Any) -> None:
        """Send ``delta`` to be applied to ``key`` by the job's ``param_update`` on its server."""

    def output(self, item: Any) -> None:
        """Emit ``item`` on the job's output stream."""


class WorkerLogic:
    """Subclass this: the per-record logic of a streaming job (the Flink parameter server's
    ``WorkerLogic``). Its state is the worker's local state (e.g. the vectors of its users)."""

    def on_recv(self, data: Any, ps: ParamAccess) -> None:
        """A record of this worker's share of the stream arrived."""
        raise NotImplementedError(f"{type(self).__name__} must implement on_recv()")

    def on_pull_recv(self, key: Key, value: Any, ps: ParamAccess) -> None:
        """The value of a key this worker pulled arrived (as stored; after ``param_init``)."""
        raise NotImplementedError(f"{type(self).__name__} pulls but does not implement on_pull_recv()")

    def close(self, ps: ParamAccess) -> None:
        """The input has ended and every pull has been answered; may still pull, push and output."""


class _Gathering:
    """A record waiting for the values of its keys."""

    __slots__ = ("record", "values", "missing")

    def __init__(self, record: Any, nkeys: int) -> None:
        self.record, self.values, self.missing = record, [None] * nkeys, nkeys


class GatherLogic(WorkerLogic):
    """A ``WorkerLogic`` for records that each need the current values of some keys: it pulls
    ``keys_of(record)`` and calls ``on_values(record, values, ps)`` once all have arrived (in
    the order of the keys). Records whose keys overlap are answered in the order they came."""

    def __init__(self) -> None:
        self._waiting: dict[Key, deque[tuple[_Gathering, int]]] = {}

    def keys_of(self, record: Any) -> Sequence[Key]:
        """The keys whose values ``record`` needs (distinct)."""
        raise NotImplementedError(f"{type(self).__name__} must implement keys_of()")

    def on_values(self, record: Any, values: list[Any], ps: ParamAccess) -> None:
        """The values of ``keys_of(record)`` arrived."""
        raise NotImplementedError(f"{type(self).__name__} must implement on_values()")

    def on_recv(self, data: Any, ps: ParamAccess) -> None:
        keys = self.keys_of(data)
        gathering = _Gathering(data, len(keys))
        for i, key in enumerate(keys):
            self._waiting.setdefault(key, deque()).append((gathering, i))
            ps.pull(key)
        if not keys:
            self.on_values(data, [], ps)

    def on_pull_recv(self, key: Key, value: Any, ps: ParamAccess) -> None:
        waiting = self._waiting[key]
        gathering, i = waiting.popleft()
        if not waiting:
            del self._waiting[key]
        gathering.values[i] = value
        gathering.missing -= 1
        if gathering.missing == 0:
            self.on_values(gathering.record, gathering.values, ps)
