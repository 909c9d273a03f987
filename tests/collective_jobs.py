"""paralg jobs for tests/test_collectives.py, run on real ranks by paracel.launch.

Each worker feeds the toolkit inputs made from its worker id (``worker_inputs``, which the
test uses to compute the expected results) and pickles what it got to ``result_<w>.pkl``.
"""
from __future__ import annotations

import json
import pickle
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel.metrics import RoundLog
from paracel.params import InputPath, PositiveFloat

ARRAY_CASES = ("int32", "uint8", "int64", "float32", "float64", "number", "empty")


def worker_inputs(w: int) -> dict[str, Any]:
    """What worker ``w`` contributes to every collective of ``Reductions``."""
    base = np.arange(6).reshape(2, 3)
    return {
        "int32": ((base * (w + 1)) % 5 - w).astype(np.int32),
        "uint8": (base + 20 * w).astype(np.uint8),
        "int64": (base - 3 * w) * (1 << 40),  # beyond float64's exact integers once summed
        "float32": (base / (w + 1)).astype(np.float32),
        "float64": (base + 0.25 * w).astype(np.float64),
        "number": w + 0.5,
        "empty": np.zeros((0, 4), np.int16),
        "complex": base + 1j * w,
        "noise": np.random.default_rng(w).standard_normal(500),  # sums round by their order
        # int64 ids with repeats; none on worker 1; int32 ones on worker 3
        "ids": {1: np.zeros(0, np.int32), 3: np.array([21, 3, 3], np.int32)}.get(
            w, np.array([7 * w, 3, 2 ** 40 + w, 3])),
        "rows": np.full((w, 2), w, np.float32),
        "sparse": sp.csr_matrix(([1.0, w + 1.0], ([0, w % 3], [0, w])), shape=(3, 5)),
        "object": {"worker": w, "text": "x" * w, "array": np.arange(w)},
    }


class Reductions(paralg):
    """Runs every collective of the toolkit, a gathered dump, a ``RoundLog`` and the ratings
    loaders."""

    def __init__(self, ratings: InputPath) -> None:
        super().__init__()
        self.ratings = ratings

    def solve(self) -> None:
        w, size = self.get_worker_id(), self.get_worker_size()
        mine = worker_inputs(w)
        got: dict[str, Any] = {}
        for name in ARRAY_CASES:
            for op in ("sum", "min", "max"):
                got[f"{name}/{op}"] = self.allreduce(mine[name], op)
        got["complex/sum"] = self.allreduce(mine["complex"])
        got["noise/sum"] = self.allreduce(mine["noise"])
        got["union"] = self.union_ids(mine["ids"])
        got["union/empty"] = self.union_ids(np.zeros(0, np.int64))
        got["rows"] = self.allgather_array(mine["rows"])
        got["rows/empty"] = self.allgather_array(np.zeros((0, 3)))
        got["sparse"] = self.allreduce_sparse(mine["sparse"])
        got["gather"] = self.gather(mine["object"], root=size - 1)
        got["bcast"] = self.bcast(mine["object"] if w == size - 1 else None, root=size - 1)
        got["allgather"] = self.allgather(mine["object"])
        got["dumped"] = self.paracel_dump("gathered", {f"worker{w}": np.arange(w + 1)}, gather=True)
        log = RoundLog(3, total="sum", slowest="max", least="min")
        for step in range(3):
            log.record(step, total=w + step, slowest=w * step, least=step - w)
        got["rounds"] = log.log(self)
        for by in ("user", "item"):
            got[f"ratings/{by}"] = self.paracel_load_ratings(self.ratings, by=by)
        got["ratings/all"] = self.paracel_loadall_ratings(self.ratings)
        (self.output_dir / f"result_{w}.pkl").write_bytes(pickle.dumps(got))


class WaitCost(paralg):
    """Worker 1 joins each collective ``delay`` seconds late; worker 0 writes the CPU time it
    used while it waited, as a fraction of the wall time (``wait_cost.json``)."""

    def __init__(self, delay: PositiveFloat = 0.6) -> None:
        super().__init__()
        self.delay = delay

    def solve(self) -> None:
        calls = {"allreduce": lambda: self.allreduce(np.ones(1000)),
                 "allgather_array": lambda: self.allgather_array(np.ones((10, 2))),
                 "bcast": lambda: self.bcast("late", root=1)}
        self.allreduce(0)  # start together
        cost = {}
        for name, call in calls.items():
            if self.get_worker_id() == 1:
                time.sleep(self.delay)
                call()
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            cost[name] = {"wall": wall, "cpu": cpu}
        if self.get_worker_id() == 0:
            (self.output_dir / "wait_cost.json").write_text(json.dumps(cost))
