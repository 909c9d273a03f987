"""Run a streaming job's logic in one process, without MPI: every pull is answered at once from
a dict, every push is added to it. The reference the MPI runs are compared with."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np


class LocalParams:
    """A ``ps`` whose table is a dict; pulls are answered by ``answer()``."""

    def __init__(self, job: Any) -> None:
        self.job, self.table, self.asked, self.outputs = job, {}, [], []

    def pull(self, key: Any) -> None:
        self.asked.append(key)

    def value(self, key: Any) -> Any:
        if key not in self.table:
            self.table[key] = self.job.param_init(key)
        return self.table[key]

    def push(self, key: Any, delta: Any) -> None:
        self.table[key] = self.value(key) + delta

    def output(self, item: Any) -> None:
        self.outputs.append(item)

    def answer(self, logic: Any) -> None:
        while self.asked:
            key = self.asked.pop(0)
            logic.on_pull_recv(key, np.copy(self.value(key)), self)


def run_locally(job: Any, logic: Any, lines: Iterable[str]) -> LocalParams:
    """Feed ``lines`` through ``job.parse`` and ``logic`` one record at a time."""
    ps = LocalParams(job)
    for position, line in enumerate(lines):
        record = job.parse(line, position)
        if record is not None:
            logic.on_recv(record, ps)
            ps.answer(logic)
    logic.close(ps)
    ps.answer(logic)
    return ps
