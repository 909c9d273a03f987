"""A count-min sketch (Cormode & Muthukrishnan 2005) of item frequencies on a stream.

``depth = ceil(ln(1/delta))`` rows of ``width = ceil(e/epsilon)`` counters live on the servers,
one key per counter (``row * width + column``). Records (one int id per line, taken from a
whitespace-separated ``field``) are dealt round-robin to the workers; each adds 1 to one
counter per row, chosen by that row's hash ``((a*x + b) mod p) mod width`` from a pairwise
independent family. The estimate of an id is the least of its counters: never below the true
count n_x, and above n_x + epsilon * N with probability at most delta (N: the stream's length).
"""
from __future__ import annotations

import math

import numpy as np

from paracel.metrics import write_summary
from paracel.params import NonNegativeInt, UnitInterval
from paracel.streaming import ParamAccess, StreamJob, StreamSettings, WorkerLogic

PRIME = (1 << 31) - 1  # ids are taken modulo this Mersenne prime


class CountMinLogic(WorkerLogic):
    """Adds each id to the sketch; remembers which ids it saw (to report their estimates)."""

    def __init__(self, job: "CountMin") -> None:
        self.job = job
        self.ids: set[int] = set()

    def on_recv(self, data: tuple[int, int], ps: ParamAccess) -> None:
        _, x = data
        self.ids.add(x)
        for key in self.job.counters(x).tolist():
            ps.push(key, 1.0)


class CountMin(StreamJob):
    """Count-min sketch of the ints in column ``field`` of a stream's lines.

    ``epsilon``, ``delta``: the guarantee (error at most ``epsilon`` times the stream length
    with probability at least 1 - ``delta``); ``seed``: of the hash functions. Writes
    ``estimates.tsv`` (``id<TAB>estimate`` for every id seen) and ``summary.tsv``.
    """

    def __init__(self, stream: StreamSettings, field: NonNegativeInt = 1, epsilon: UnitInterval = 0.005,
                 delta: UnitInterval = 0.01, seed: NonNegativeInt = 0) -> None:
        super().__init__(stream)
        self.field, self.epsilon, self.delta = field, epsilon, delta
        self.width, self.depth = math.ceil(math.e / epsilon), math.ceil(math.log(1 / delta))
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, PRIME, self.depth, dtype=np.int64)
        self.b = rng.integers(0, PRIME, self.depth, dtype=np.int64)
        self.estimates: dict[int, float] = {}

    def counters(self, x: int) -> np.ndarray:
        """The key of ``x``'s counter in every row."""
        columns = (self.a * (x % PRIME) + self.b) % PRIME % self.width  # < 2^62: no int64 overflow
        return np.arange(self.depth, dtype=np.int64) * self.width + columns

    def parse(self, line: str, position: int) -> tuple[int, int] | None:
        fields = line.split()
        if not fields:
            return None
        try:
            return position, int(fields[self.field])
        except (ValueError, IndexError):
            raise ValueError(f"no int in field {self.field}") from None

    def partition_key(self, record: tuple[int, int]) -> int:
        return record[0]

    def worker_logic(self) -> CountMinLogic:
        return CountMinLogic(self)

    def after_stream(self, logic: CountMinLogic) -> None:
        ids = self.union_ids(np.array(sorted(logic.ids), dtype=np.int64))
        length = int(self.allreduce(np.array([logic.job.stats.records]))[0])
        if self.get_worker_id() != 0:
            return
        sketch = np.zeros(self.depth * self.width)
        for key, count in self.paracel_readall().items():
            sketch[key] = count
        keys = np.stack([self.counters(int(x)) for x in ids]) if len(ids) else np.zeros((0, self.depth), np.int64)
        estimates = sketch[keys].min(axis=1)
        self.estimates = dict(zip(ids.tolist(), estimates.tolist()))
        with open(self.output_dir / "estimates.tsv", "w", encoding="utf-8") as out:
            out.writelines(f"{x}\t{int(c)}\n" for x, c in self.estimates.items())
        write_summary(self, length=length, width=self.width, depth=self.depth, error_bound=self.epsilon * length)
