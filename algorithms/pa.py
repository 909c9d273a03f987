"""Passive-aggressive binary classification (PA-I, Crammer et al. 2006) on a stream.

Records are LIBSVM lines (``label idx:value ...``, labels -1/+1 or 0/1), dealt round-robin to
the workers. The weight vector lives on the servers in blocks of ``block`` weights (key: block
number; the last weight is a bias on a constant feature). For each record the worker pulls the
blocks its features touch; once all have arrived it takes the PA-I step
``w += tau * y * x`` with ``tau = min(C, hinge loss / |x|^2)`` and pushes each block's change.
After one pass the model is evaluated on a test file.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from paracel.metrics import write_summary
from paracel.params import InputPath, PositiveFloat, PositiveInt
from paracel.streaming import ParamAccess, StreamJob, StreamSettings, WorkerLogic


class Example(NamedTuple):
    position: int
    label: float  # -1 or +1
    index: np.ndarray  # int64 feature indices, 0-based, the bias last
    value: np.ndarray


class Waiting:
    """A record whose blocks are being pulled."""

    def __init__(self, example: Example, blocks: np.ndarray) -> None:
        self.example, self.blocks = example, blocks
        self.values: dict[int, np.ndarray] = {}


class PALogic(WorkerLogic):
    """PA-I steps; keeps no model of its own."""

    def __init__(self, job: "PassiveAggressive") -> None:
        self.job = job
        self.waiting: dict[int, list[Waiting]] = {}  # block -> records waiting for it, in order
        self.mistakes = 0

    def on_recv(self, data: Example, ps: ParamAccess) -> None:
        record = Waiting(data, np.unique(data.index // self.job.block))
        for block in record.blocks.tolist():
            self.waiting.setdefault(block, []).append(record)
            ps.pull(block)

    def on_pull_recv(self, key: Any, value: np.ndarray, ps: ParamAccess) -> None:
        record = self.waiting[key].pop(0)
        record.values[key] = value
        if len(record.values) == len(record.blocks):
            self._step(record, ps)

    def _step(self, record: Waiting, ps: ParamAccess) -> None:
        ex, size = record.example, self.job.block
        weights = np.array([record.values[b][i] for b, i in zip((ex.index // size).tolist(), (ex.index % size).tolist())])
        margin = ex.label * float(weights @ ex.value)
        self.mistakes += margin <= 0
        loss = max(0.0, 1.0 - margin)
        if loss == 0.0:
            return
        tau = min(self.job.C, loss / float(ex.value @ ex.value))
        step = tau * ex.label * ex.value
        for block in record.blocks.tolist():
            delta = np.zeros(size)
            inside = ex.index // size == block
            np.add.at(delta, ex.index[inside] % size, step[inside])
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
        where = f"{self.stream.input}: stream line {position + 1}"
        try:
            label = float(fields[0])
            pairs = [field.split(":") for field in fields[1:]]
            index = np.array([int(i) - 1 for i, _ in pairs] + [self.n_features], dtype=np.int64)
            value = np.array([float(v) for _, v in pairs] + [1.0])
        except ValueError:
            raise ValueError(f"{where}: not a LIBSVM line: {line[:60]!r}") from None
        if label not in (-1.0, 0.0, 1.0) or (len(index) > 1 and not 0 <= index[:-1].min() <= index[:-1].max()
                                               < self.n_features):
            raise ValueError(f"{where}: label must be -1/0/+1 and indices 1..{self.n_features}: {line[:60]!r}")
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
