"""Algorithms run by the watching tests (progress, run record, report) on real ranks."""
from __future__ import annotations

import json
import math
import time

import numpy as np

from paracel import paralg
from paracel.metrics import RoundLog


class Straggler(paralg):
    """``rounds`` clocks of reading and updating ``nkeys`` int keys (a worker's own update drops
    its cached copy: every read goes to the servers); worker ``slow`` sleeps ``pause`` seconds in round ``pause_round``,
    every worker ``work`` seconds each round. Worker 0 logs a ``loss`` per round right away, and
    every round's ``mean_clock`` combined over the workers is logged through
    ``RoundLog.log_round``. Each worker writes how long its ``solve()`` took (``solve_<w>.json``)."""

    def __init__(self, rounds: int = 6, nkeys: int = 300, slow: int = 1, pause: float = 0.0,
                 pause_round: int = 1, work: float = 0.02) -> None:
        self.rounds, self.nkeys, self.slow = rounds, nkeys, slow
        self.pause, self.pause_round, self.work = pause, pause_round, work

    def solve(self) -> None:
        started = time.perf_counter()
        w = self.get_worker_id()
        keys = np.arange(self.nkeys, dtype=np.int64)
        if w == 0:
            self.paracel_write_multi(keys, np.zeros((self.nkeys, 4)))
        self.set_total_iters(self.rounds)
        self.sync()
        log = RoundLog(self.rounds, mean_clock="sum", slowest="max")
        for rnd in range(self.rounds):
            rows = self.paracel_read_multi(keys, as_array=True)
            time.sleep(self.work + (self.pause if w == self.slow and rnd == self.pause_round else 0.0))
            self.paracel_bupdate_multi(keys, np.ones_like(rows))
            self.iter_commit()
            if w == 0:
                self.log_metrics(rnd, loss=1.0 / (rnd + 1), rows=int(rows.sum()))
            log.record(rnd, mean_clock=(rnd + 1) / self.get_worker_size(), slowest=time.perf_counter() - started)
            log.log_round(self, rnd)
        log.log(self)
        (self.output_dir / f"solve_{w}.json").write_text(json.dumps({"seconds": time.perf_counter() - started}))


class Diverges(paralg):
    """Worker 0 logs a loss that turns NaN in round 2."""

    def solve(self) -> None:
        for rnd in range(4):
            self.iter_commit()
            if self.get_worker_id() == 0:
                self.log_metrics(rnd, loss=math.nan if rnd == 2 else 1.0, test_rmse=None)
