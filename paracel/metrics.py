"""Per-round metrics: what each worker measures in its rounds, combined over the workers.

A worker records its own figures each round (sums of errors, counts, its clock);
``log_round`` starts combining a round over the workers without waiting for them (MPI's
non-blocking reductions), and worker 0 logs each combined round with ``paralg.log_metrics``
as soon as every worker has contributed to it — so measuring never adds a barrier to a round,
and the rounds show up while the job runs. ``log`` combines what is left and returns them all.
"""
from __future__ import annotations

import math
import numbers
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np

if TYPE_CHECKING:
    from mpi4py import MPI

    from paracel.paralg import paralg

Combine = Literal["sum", "min", "max"]
Row = dict[str, float]
Metric = float | int | bool | None


def rmse(sse: float, count: float) -> float:
    """Root mean squared error from a sum of squared errors and a count (NaN when empty)."""
    return float(np.sqrt(sse / count)) if count else float("nan")


def checked_metrics(step: int, values: Mapping[str, Any]) -> dict[str, Metric]:
    """``values`` as plain JSON numbers (numpy scalars converted; None kept for "no value").

    Raises ``ParacelError`` naming the metric and ``step`` for a NaN or infinite value,
    ``TypeError`` for a value that is not a number.
    """
    from paracel.errors import ParacelError
    row: dict[str, Metric] = {}
    for name, value in values.items():
        if value is None or isinstance(value, (bool, np.bool_)):
            row[name] = None if value is None else bool(value)
        elif isinstance(value, numbers.Integral):
            row[name] = int(value)
        elif isinstance(value, numbers.Real):
            row[name] = float(value)
            if not math.isfinite(row[name]):
                raise ParacelError(f"metric {name!r} at step {step} is {row[name]} (log None for a metric "
                                   "that has no value)")
        else:
            raise TypeError(f"metric {name!r} at step {step} must be a number or None, not {type(value).__name__}")
    return row


class RoundLog:
    """A table of ``rounds`` rows of named values, each combined over the workers by its rule.

    ``RoundLog(30, sse="sum", n="sum", seconds="max")`` sums ``sse`` and ``n`` and keeps the
    slowest worker's ``seconds``. Each round: ``record(step, ...)`` then ``log_round(alg,
    step)``; at the end ``log(alg)``. Subclasses turn a combined row into what is logged by
    overriding ``summarize``.
    """

    def __init__(self, rounds: int, **rules: Combine) -> None:
        bad = {name: rule for name, rule in rules.items() if rule not in ("sum", "min", "max")}
        if bad:
            raise ValueError(f"rules must be 'sum', 'min' or 'max', got {bad}")
        self.rules = rules
        self.table = np.zeros((rounds, len(rules)))
        rule_of = np.array(list(rules.values()))
        self._sums = np.flatnonzero(rule_of == "sum")
        self._signs = np.where(rule_of == "min", -1.0, 1.0)  # min is the max of the negated values
        self._peaks = np.flatnonzero(rule_of != "sum")
        self._pending: deque[tuple[int, list["MPI.Request"], np.ndarray, np.ndarray, Any]] = deque()
        self._combined: dict[int, Row] = {}
        self._quiet = 0  # rounds before this one were logged before a checkpoint: not again

    def resume(self, rows: np.ndarray) -> None:
        """Continue from a checkpoint: ``rows`` are this worker's values of the rounds before it
        (``table[:n]``, as saved). They are combined into the returned history at the end, but
        not logged again (the run before the checkpoint logged them)."""
        self.table[:len(rows)] = rows
        self._quiet = len(rows)

    def record(self, step: int, **values: float) -> None:
        """This worker's values of round ``step`` (every name, nothing else)."""
        if values.keys() != self.rules.keys():
            raise ValueError(f"record needs exactly {sorted(self.rules)}, got {sorted(values)}")
        self.table[step] = [values[name] for name in self.rules]

    def summarize(self, row: Row) -> Row:
        """What is logged for one combined row (the row itself here)."""
        return row

    def log_round(self, alg: "paralg", step: int) -> None:
        """Collective, without waiting: start combining round ``step`` over the workers (every
        worker calls it for the same rounds, in the same order); worker 0 logs, in order, every
        round whose combination has completed, this one once the slowest worker has sent it."""
        from mpi4py import MPI
        signed = self.table[step] * self._signs
        sends = (signed[self._sums], signed[self._peaks])  # kept in _pending until MPI is done with them
        sums, peaks = np.empty(len(self._sums)), np.empty(len(self._peaks))
        requests = [alg.worker_comm.Iallreduce(part, out, op=op)
                    for part, out, op in ((sends[0], sums, MPI.SUM), (sends[1], peaks, MPI.MAX)) if len(out)]
        self._pending.append((step, requests, sums, peaks, sends))
        self._drain(alg, wait=False)

    def log(self, alg: "paralg") -> list[Row]:
        """Collective: combine every round not yet given to ``log_round``, wait for all, log
        the rest from worker 0 (``log_metrics``, step = round) and return every round's
        summarized row on every worker."""
        for step in range(len(self.table)):
            if step not in self._combined and all(step != pending[0] for pending in self._pending):
                self.log_round(alg, step)
        self._drain(alg, wait=True)
        return [self._combined[step] for step in range(len(self.table))]

    def _drain(self, alg: "paralg", wait: bool) -> None:
        """Log the rounds whose combination has completed, oldest first (all with ``wait``)."""
        from mpi4py import MPI

        from paracel.collectives import wait as wait_for
        while self._pending:
            step, requests, sums, peaks, _ = self._pending[0]
            if wait:
                wait_for(*requests)
            elif not MPI.Request.Testall(requests):
                return
            self._pending.popleft()
            row = np.empty(len(self.rules))
            row[self._sums], row[self._peaks] = sums, peaks
            self._combined[step] = self.summarize(dict(zip(self.rules, (row * self._signs).tolist())))
            if alg.get_worker_id() == 0 and step >= self._quiet:
                alg.log_metrics(step, **self._combined[step])


class FitLog(RoundLog):
    """Rounds of a model fit to ratings: squared-error sums and counts on the train and test
    ratings, and seconds since training began; logged as ``train_rmse``, ``test_rmse`` (over
    all workers) and ``seconds`` (the slowest worker's)."""

    def __init__(self, rounds: int) -> None:
        super().__init__(rounds, train_sse="sum", train_n="sum", test_sse="sum", test_n="sum",
                         seconds="max")

    def summarize(self, row: Row) -> Row:
        test = rmse(row["test_sse"], row["test_n"]) if row["test_n"] else None  # no test ratings: no value
        return {"train_rmse": rmse(row["train_sse"], row["train_n"]), "test_rmse": test, "seconds": row["seconds"]}


def write_summary(alg: "paralg", **values: float | None) -> None:
    """Worker 0 writes the run's final figures to ``summary.tsv`` (``name<TAB>value`` lines;
    None, "no value", as ``nan``)."""
    if alg.get_worker_id() == 0:
        text = "".join(f"{name}\t{float('nan') if value is None else value:.9g}\n" for name, value in values.items())
        (alg.output_dir / "summary.tsv").write_text(text)
