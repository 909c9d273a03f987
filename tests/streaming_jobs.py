"""Streaming jobs for tests/test_streaming.py, whose results can be checked exactly."""
from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from typing import Any, NamedTuple

from paracel.streaming import ParamAccess, StreamJob, StreamSettings, WorkerLogic


def slow_add(old: float, delta: float) -> float:
    """A server update function that takes 2 ms per key: a deliberately slow server."""
    time.sleep(0.002)
    return old + delta


class Record(NamedTuple):
    position: int
    key: int
    value: float


class TallyLogic(WorkerLogic):
    """Pulls each record's key; when its value arrives, outputs ``[position, value seen]`` and
    pushes the record's value onto the key."""

    def __init__(self) -> None:
        self.waiting: defaultdict[int, deque[Record]] = defaultdict(deque)

    def on_recv(self, data: Record, ps: ParamAccess) -> None:
        self.waiting[data.key].append(data)
        ps.pull(data.key)

    def on_pull_recv(self, key: Any, value: float, ps: ParamAccess) -> None:
        record = self.waiting[key].popleft()
        ps.output([record.position, value])
        ps.push(key, record.value)


class Tally(StreamJob):
    """Sums the values of ``key value`` lines per key on the servers, through ``TallyLogic``.

    ``update``: the servers' update function. Worker 0 writes the final sums as ``totals.json``.
    """

    def __init__(self, stream: StreamSettings, update: str = "add") -> None:
        super().__init__(stream)
        self.param_update = update

    def parse(self, line: str, position: int) -> Record:
        key, value = line.split()
        return Record(position, int(key), float(value))

    def partition_key(self, record: Record) -> int:
        return record.key

    def worker_logic(self) -> TallyLogic:
        return TallyLogic()

    def after_stream(self, logic: TallyLogic) -> None:
        if self.get_worker_id() == 0:
            (self.output_dir / "totals.json").write_text(json.dumps(self.paracel_readall()))
