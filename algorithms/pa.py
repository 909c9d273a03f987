"""Passive-aggressive binary classification (PA-I, Crammer et al. 2006) on a stream.

Records are LIBSVM lines (``label idx:value ...``, labels -1/+1 or 0/1), dealt round-robin to
the workers. The weight vector lives on the servers in blocks of ``block`` weights (key: block
number; the last weight is a bias on a constant feature). For each record the worker pulls the
blocks its features touch; once all have arrived it takes the PA-I step
``w += tau * y * x`` with ``tau = min(C, hinge loss / |x|^2)`` and pushes each block's change.
After one pass the model is evaluated on a test file.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from paracel.metrics import write_summary
from paracel.params import InputPath, PositiveFloat, PositiveInt
from paracel.streaming import GatherLogic, ParamAccess, StreamJob, StreamSettings


class Example(NamedTuple):
    position: int
    label: float  # -1 or +1
    index: np.ndarray  # int64 feature indices, 0-based, the bias last
    value: np.ndarray


class PALogic(GatherLogic):
    """PA-I steps on the weight blocks a record touches; keeps no model of its own."""

    def __init__(self, job: "PassiveAggressive") -> None:
        super().__init__()
        self.job = job
        self.mistakes = 0

    def keys_of(self, record: Example) -> list[int]:
        return np.unique(record.index // self.job.block).tolist()

    def on_values(self, record: Example, values: list[np.ndarray], ps: ParamAccess) -> None:
        blocks, row = np.unique(record.index // self.job.block, return_inverse=True)
        column, rows = record.index % self.job.block, np.stack(values)
        margin = record.label * float(rows[row, column] @ record.value)
        self.mistakes += margin <= 0
        loss = max(0.0, 1.0 - margin)
        if loss == 0.0:
            return
        tau = min(self.job.C, loss / float(record.value @ record.value))
        deltas = np.zeros_like(rows)
        np.add.at(deltas, (row, column), tau * record.label * record.value)
        for block, delta in zip(blocks.tolist(), deltas):
            ps.push(block, delta)


class PassiveAggressive(StreamJob):
    """PA-I over a stream of LIBSVM lines.

    ``n_features``: feature indices are 1 .. n_features; ``C``: the aggressiveness bound;
    ``block``: weights per server key; ``test``: a LIBSVM file to evaluate the final model on.
    Writes ``summary.tsv`` (online mistakes, test accuracy) and ``weights_0.npy``.
    """

    def __init__(self, stream: StreamSettings, n_features: PositiveInt, C: PositiveFloat = 0.003,
                 block: PositiveInt = 32, test: InputPath | None = None) -> None:
        super().__init__(stream)
        self.n_features, self.C, self.block, self.test = n_features, C, block, test
        self.test_accuracy = float("nan")

    def parse(self, line: str, position: int) -> Example | None:
        fields = line.split()
        if not fields:
            return None
        try:
            label = float(fields[0])
            pairs = [field.split(":") for field in fields[1:]]
            index = np.array([int(i) - 1 for i, _ in pairs] + [self.n_features], dtype=np.int64)
            value = np.array([float(v) for _, v in pairs] + [1.0])
        except ValueError:
            raise ValueError("not a LIBSVM line") from None
        if label not in (-1.0, 0.0, 1.0) or (len(index) > 1 and not 0 <= index[:-1].min() <= index[:-1].max()
                                               < self.n_features):
            raise ValueError(f"label must be -1/0/+1 and indices 1..{self.n_features}")
        return Example(position, 1.0 if label > 0 else -1.0, index, value)

    def partition_key(self, record: Example) -> int:
        return record.position

    def param_init(self, key: int) -> np.ndarray:
        return np.zeros(self.block)

    def worker_logic(self) -> PALogic:
        return PALogic(self)

    def weights(self) -> np.ndarray:
        """The model (n_features + 1 weights, the bias last) as the servers hold it now."""
        nblocks = self.n_features // self.block + 1
        present = [b for b in range(nblocks) if self.paracel_contains(b)]
        out = np.zeros(nblocks * self.block)
        for block, row in zip(present, self.paracel_read_multi(present)):
            out[block * self.block:(block + 1) * self.block] = row
        return out[:self.n_features + 1]

    def after_stream(self, logic: PALogic) -> None:
        mistakes = int(self.allreduce(np.array([logic.mistakes]))[0])
        test = self.paracel_load_labeled(self.test, n_features=self.n_features, everywhere=True) if self.test else None
        if self.get_worker_id() != 0:
            return
        w = self.weights()
        np.save(self.output_dir / "weights_0.npy", w)
        if test is not None:
            scores = test.X @ w[:-1] + w[-1]
            self.test_accuracy = float(np.mean(np.where(scores > 0, 1.0, -1.0) == np.where(test.y > 0, 1.0, -1.0)))
        write_summary(self, online_mistakes=mistakes, test_accuracy=self.test_accuracy)
