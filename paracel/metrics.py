"""Per-round metrics: what each worker measures in its rounds, combined over the workers once.

A worker records its own figures each round (sums of errors, counts, its clock); ``log``
combines every round at the end with one reduction per rule, so measuring never adds a
barrier to a round, and worker 0 logs the result with ``paralg.log_metrics``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from paracel.paralg import paralg

Combine = Literal["sum", "min", "max"]
Row = dict[str, float]


def rmse(sse: float, count: float) -> float:
    """Root mean squared error from a sum of squared errors and a count (NaN when empty)."""
    return float(np.sqrt(sse / count)) if count else float("nan")


class RoundLog:
    """A table of ``rounds`` rows of named values, each combined over the workers by its rule.

    ``RoundLog(30, sse="sum", n="sum", seconds="max")`` sums ``sse`` and ``n`` and keeps the
    slowest worker's ``seconds``. Subclasses turn a combined row into what is logged by
    overriding ``summarize``.
    """

    def __init__(self, rounds: int, **rules: Combine) -> None:
        bad = {name: rule for name, rule in rules.items() if rule not in ("sum", "min", "max")}
        if bad:
            raise ValueError(f"rules must be 'sum', 'min' or 'max', got {bad}")
        self.rules = rules
        self.table = np.zeros((rounds, len(rules)))

    def record(self, step: int, **values: float) -> None:
        """This worker's values of round ``step`` (every name, nothing else)."""
        if values.keys() != self.rules.keys():
            raise ValueError(f"record needs exactly {sorted(self.rules)}, got {sorted(values)}")
        self.table[step] = [values[name] for name in self.rules]

    def summarize(self, row: Row) -> Row:
        """What is logged for one combined row (the row itself here)."""
        return row

    def log(self, alg: "paralg") -> list[Row]:
        """Collective: combine every round over the workers, log each summarized row from
        worker 0 (``log_metrics``, step = round) and return them on every worker."""
        combined = self.table.copy()
        for rule in ("sum", "min", "max"):
            columns = [i for i, r in enumerate(self.rules.values()) if r == rule]
            if columns:
                combined[:, columns] = alg.allreduce(self.table[:, columns], rule)
        history = [self.summarize(dict(zip(self.rules, row.tolist()))) for row in combined]
        if alg.get_worker_id() == 0:
            for step, metrics in enumerate(history):
                alg.log_metrics(step, **metrics)
        return history


class FitLog(RoundLog):
    """Rounds of a model fit to ratings: squared-error sums and counts on the train and test
    ratings, and seconds since training began; logged as ``train_rmse``, ``test_rmse`` (over
    all workers) and ``seconds`` (the slowest worker's)."""

    def __init__(self, rounds: int) -> None:
        super().__init__(rounds, train_sse="sum", train_n="sum", test_sse="sum", test_n="sum",
                         seconds="max")

    def summarize(self, row: Row) -> Row:
        return {"train_rmse": rmse(row["train_sse"], row["train_n"]),
                "test_rmse": rmse(row["test_sse"], row["test_n"]), "seconds": row["seconds"]}


def write_summary(alg: "paralg", **values: float) -> None:
    """Worker 0 writes the run's final figures to ``summary.tsv`` (``name<TAB>value`` lines)."""
    if alg.get_worker_id() == 0:
        text = "".join(f"{name}\t{value:.9g}\n" for name, value in values.items())
        (alg.output_dir / "summary.tsv").write_text(text)
