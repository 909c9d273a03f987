"""Algorithms for the checkpoint and resume tests (run by real ranks via paracel.launch/prun)."""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from paracel import paralg


class Accumulate(paralg):
    """Every worker adds integer-valued rows from its own generator to shared keys each round
    and keeps a running total of what it added (local state). Sums of small integers are exact
    in float64 whatever the order, so two runs end with the same bits; worker 0 writes
    ``final.json`` (the table and every worker's total)."""

    def __init__(self, rounds: int = 20, nkeys: int = 50, seed: int = 0, delay: float = 0.0, stall_at: int = 0):
        self.rounds, self.nkeys, self.seed, self.delay = rounds, nkeys, seed, delay
        self.stall_at = stall_at  # worker 0 hangs in its checkpoint of this clock (to be killed there)
        self.state: dict[str, Any] | None = None

    def save_state(self) -> dict[str, Any]:
        if self.get_worker_id() == 0 and self.get_clock() == self.stall_at:
            (self.output_dir / "stalled").touch()
            time.sleep(120)
        return self.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.state = state

    def solve(self) -> None:
        w = self.get_worker_id()
        if self.state is None:
            self.state = {"total": np.zeros(self.nkeys), "round": 0,
                          "rng": np.random.default_rng(self.seed + w).bit_generator.state}
        rng = np.random.default_rng()
        rng.bit_generator.state = self.state["rng"]
        keys = np.arange(self.nkeys)
        while self.state["round"] < self.rounds:
            delta = rng.integers(-5, 6, size=(self.nkeys, 2)).astype(float)
            self.paracel_bupdate_multi(keys, delta)
            self.paracel_read_multi(keys, as_array=True)
            self.state = {"total": self.state["total"] + delta[:, 0], "round": self.state["round"] + 1,
                          "rng": rng.bit_generator.state}
            time.sleep(self.delay)
            self.iter_commit()
        self.sync()
        totals = self.allgather_array(self.state["total"][None])
        if w == 0:
            table = self.paracel_read_multi(keys, as_array=True)
            final = {"table": table.tolist(), "totals": totals.tolist(), "clock": self.get_clock()}
            (self.output_dir / "final.json").write_text(json.dumps(final))
