"""Online matrix factorization on a stream of ratings, evaluated prequentially.

The Flink parameter server's online MF: ratings are partitioned by user, so a worker keeps
its users' rows locally; an item's row ``[f_0 .. f_{k-1}, bias]`` lives on the servers. For
each rating the worker pulls the item's row; when it arrives it first predicts the rating
(``mu + b_u + b_i + p_u . q_i``, clipped to the scale seen so far) — the prequential test —
then takes one SGD step, updates the user's row locally and pushes the item row's change as an
``add`` delta. ``mu`` is the running mean of the ratings the worker has seen. Optionally the
job starts from a batch model written by ``paracel.algorithms.mf:MF`` (``seed_model``).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from paracel.metrics import rmse, write_summary
from paracel.params import InputPath, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from paracel.streaming import GatherLogic, ParamAccess, StreamJob, StreamSettings


class Rating(NamedTuple):
    position: int
    user: int
    item: int
    rating: float


def initial_row(seed: int, key: int, rank: int, init_std: float) -> np.ndarray:
    """A row's start: factors drawn from N(0, init_std) by a generator seeded by ``(seed, key)``
    (the same on every worker), bias 0."""
    row = np.zeros(rank + 1)
    row[:rank] = np.random.default_rng([seed, key]).normal(0.0, init_std, rank)
    return row


def read_rows(path: Path) -> dict[int, np.ndarray]:
    """The ``id<TAB>f_0,...,bias`` rows of an MF output file."""
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            key, values = line.split("\t")
            rows[int(key)] = np.array(values.split(","), dtype=np.float64)
        except ValueError:
            raise ValueError(f"{path}:{number}: not an 'id<TAB>f_0,...,bias' row: {line[:60]!r}") from None
    return rows


class MFLogic(GatherLogic):
    """One worker's users and its prequential record."""

    def __init__(self, job: "OnlineMF", users: dict[int, np.ndarray], mean: float | None) -> None:
        super().__init__()
        self.job = job
        self.users = users
        self.fixed_mean = mean
        self.total, self.count = 0.0, 0
        self.lo, self.hi = np.inf, -np.inf
        self.seen: list[tuple[int, float, float]] = []  # (position, rating, prediction)

    def keys_of(self, record: Rating) -> list[int]:
        return [record.item]

    def on_values(self, r: Rating, values: list[np.ndarray], ps: ParamAccess) -> None:
        (value,) = values
        job, k = self.job, self.job.rank
        u = self.users.get(r.user)
        if u is None:
            u = self.users[r.user] = initial_row(job.seed + 1, r.user, k, job.init_std)
        mu = self.fixed_mean if self.fixed_mean is not None else (self.total / self.count if self.count else r.rating)
        raw = mu + u[k] + value[k] + float(u[:k] @ value[:k])
        self.seen.append((r.position, r.rating, min(max(raw, self.lo), self.hi) if self.count else mu))
        self.total, self.count = self.total + r.rating, self.count + 1
        self.lo, self.hi = min(self.lo, r.rating), max(self.hi, r.rating)
        e, lr = r.rating - raw, job.learning_rate
        delta = np.empty(k + 1)
        delta[:k] = lr * (e * u[:k] - job.reg * value[:k])
        delta[k] = lr * (e - job.reg_bias * value[k])
        u[:k] += lr * (e * value[:k] - job.reg * u[:k])
        u[k] += lr * (e - job.reg_bias * u[k])
        ps.push(r.item, delta)


class OnlineMF(StreamJob):
    """Online biased MF over a stream of ``user item rating [time]`` lines.

    ``rank``: factors per row; ``learning_rate``, ``reg`` (factors), ``reg_bias`` (biases):
    the SGD step; ``init_std``: spread of initial factors; ``seed``: of the initial rows;
    ``tail``: the fraction of the stream (its end) whose prequential RMSE is reported;
    ``seed_model``: an ``mf`` job's output folder to start from (its item rows are written to
    the servers, its user rows kept by their workers, its global mean used as ``mu``).
    Writes ``summary.tsv`` (prequential RMSE of the whole stream and of its tail, beside the
    prequential global mean's), ``predictions.tsv`` (``position rating prediction``) and
    ``user_factors_<w>.txt``.
    """

    def __init__(self, stream: StreamSettings, rank: PositiveInt = 10, learning_rate: PositiveFloat = 0.04,
                 reg: NonNegativeFloat = 0.05, reg_bias: NonNegativeFloat = 0.01, init_std: NonNegativeFloat = 0.1,
                 seed: NonNegativeInt = 0, tail: UnitInterval = 0.2, seed_model: InputPath | None = None) -> None:
        super().__init__(stream)
        self.rank, self.learning_rate, self.reg, self.reg_bias = rank, learning_rate, reg, reg_bias
        self.init_std, self.seed, self.tail, self.seed_model = init_std, seed, tail, seed_model
        self.users: dict[int, np.ndarray] = {}  # this worker's users' rows at the start (seeded)
        self.mean: float | None = None  # a seed model's global mean (None: the running mean)
        self.summary: dict[str, float] = {}

    def parse(self, line: str, position: int) -> Rating | None:
        fields = line.split()
        if not fields:
            return None
        try:
            return Rating(position, int(fields[0]), int(fields[1]), float(fields[2]))
        except (ValueError, IndexError):
            raise ValueError("not 'user item rating [time]'") from None

    def partition_key(self, record: Rating) -> int:
        return record.user

    def param_init(self, key: int) -> np.ndarray:
        return initial_row(self.seed, key, self.rank, self.init_std)

    def _seed_rows(self, name: str) -> dict[int, np.ndarray]:
        rows: dict[int, np.ndarray] = {}
        for path in sorted(Path(self.seed_model).glob(f"{name}_*.txt")):
            rows.update(read_rows(path))
        if not rows:
            raise ValueError(f"seed_model {self.seed_model!r}: no {name}_*.txt (the output of an mf job)")
        width = {len(row) for row in rows.values()}
        if width != {self.rank + 1}:
            raise ValueError(f"seed_model {self.seed_model!r}: rows of width {sorted(width)} in {name}_*.txt, "
                             f"but rank {self.rank} needs {self.rank + 1}")
        return rows

    def before_stream(self) -> None:
        if self.seed_model is None:
            return
        if any(Path(self.seed_model).glob("item_implicit_*.txt")):
            raise ValueError(f"seed_model {self.seed_model!r}: trained with implicit feedback (SVD++), which "
                             f"online MF does not model: train it with implicit=false")
        wid, nw = self.get_worker_id(), self.get_worker_size()
        items = self._seed_rows("item_factors")
        keys = sorted(items)[wid::nw]
        if keys:
            self.paracel_write_multi(np.array(keys), np.stack([items[key] for key in keys]))
        self.users = {u: row for u, row in self._seed_rows("user_factors").items() if self.owns(u)}
        summary = Path(self.seed_model) / "summary.tsv"
        values = dict(line.split("\t") for line in summary.read_text().splitlines())
        self.mean = float(values["global_mean"])

    def worker_logic(self) -> MFLogic:
        return MFLogic(self, self.users, self.mean)

    def after_stream(self, logic: MFLogic) -> None:
        seen = np.array(logic.seen, dtype=np.float64).reshape(-1, 3)
        every = self.allgather_array(seen)
        self.paracel_dump("user_factors", logic.users)
        if self.get_worker_id() != 0:
            return
        every = every[np.argsort(every[:, 0], kind="stable")]
        ratings, predictions = every[:, 1], every[:, 2]
        counts = np.arange(len(ratings))
        running = np.concatenate([[ratings[0] if len(ratings) else np.nan], np.cumsum(ratings)[:-1] / counts[1:]])
        tail = counts >= int(np.floor((1 - self.tail) * len(ratings)))
        self.summary = {
            "ratings": len(ratings),
            "prequential_rmse": rmse(float(np.sum((predictions - ratings) ** 2)), len(ratings)),
            "tail_rmse": rmse(float(np.sum((predictions[tail] - ratings[tail]) ** 2)), int(tail.sum())),
            "tail_mean_rmse": rmse(float(np.sum((running[tail] - ratings[tail]) ** 2)), int(tail.sum())),
        }
        write_summary(self, **self.summary)
        np.savetxt(self.output_dir / "predictions.tsv", every, fmt=["%d", "%g", "%.6f"], delimiter="\t")
