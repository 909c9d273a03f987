"""A 2-way factorization machine (Rendle 2010) trained online on a stream of ratings, with user
and item side features.

A rating ``user item rating`` becomes a sparse feature vector x: the user's and the item's
one-hot ids (1 each) and side features scaled by ``side_weight``: the user's age decade, gender
and occupation (``u.user``: ``id|age|gender|occupation|zip``) and the item's genres (``u.item``:
``id|title|...``, its last ``GENRES`` fields 0/1; the weight is spread as
``side_weight / sqrt(genres)`` over them). The prediction is
``mu + sum_j w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l`` with ``mu`` the running mean of the
ratings seen (a global bias every record would update at once is the one parameter that
asynchronous steps make overshoot). A feature's row is ``[w_j, v_j (rank values), then the
sums of squared gradients of those rank + 1 values]``. A user's or an item's row is a key of
its own on the servers; the few dozen side features' rows, which nearly every rating touches,
travel together as one block (key ``SIDE``). For each rating the worker pulls its user's and
item's rows and the block, takes an SGD step with AdaGrad step sizes (``learning_rate / sqrt(sum
of squared gradients)``, per value) and pushes the changes with ``add``. Records are dealt
round-robin to the workers; training runs ``stream.passes`` passes over a shuffled replay
(``stream.shuffle``), then the model is evaluated on a test file.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from paracel.metrics import rmse, write_summary
from paracel.params import InputPath, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from paracel.streaming import GatherLogic, ParamAccess, StreamJob, StreamSettings

#: Genre flags at the end of a ``u.item`` line.
GENRES = 19
AGES = 10  # age decades 0..9 (older is 9)
SIDE = 0  # the key of the side features' block
EPS = 1e-8  # keeps a first step of zero gradient finite


class Rating(NamedTuple):
    position: int
    user: int  # the user's key
    item: int  # the item's key
    side: np.ndarray  # the rows of its side features in the block
    values: np.ndarray  # x: 1 (user), 1 (item), then the side features' values
    rating: float


class SideFeatures:
    """The features of every user and item of ``u.user`` / ``u.item`` files.

    Side features (rows of the block, in order): age decades, genders, occupations, genres
    (names sorted). Keys: ``SIDE``, then users and items by sorted id.
    """

    def __init__(self, users: Path, items: Path, side_weight: float) -> None:
        people = [_fields(users, line, number, 5)
                  for number, line in enumerate(users.read_text(encoding="latin-1").splitlines(), 1)]
        films = [_fields(items, line, number, 5 + GENRES)
                 for number, line in enumerate(items.read_text(encoding="latin-1").splitlines(), 1)]
        genders, jobs = sorted({p[2] for p in people}), sorted({p[3] for p in people})
        gender0 = AGES
        job0 = gender0 + len(genders)
        genre0 = job0 + len(jobs)
        self.nside = genre0 + GENRES
        self.users: dict[int, tuple[int, list[int], list[float]]] = {}
        for key, p in enumerate(sorted(people, key=lambda p: int(p[0])), SIDE + 1):
            side = [min(int(p[1]) // 10, AGES - 1), gender0 + genders.index(p[2]), job0 + jobs.index(p[3])]
            self.users[int(p[0])] = (key, side, [side_weight] * 3)
        self.items: dict[int, tuple[int, list[int], list[float]]] = {}
        for key, f in enumerate(sorted(films, key=lambda f: int(f[0])), SIDE + 1 + len(people)):
            genres = [genre0 + g for g, flag in enumerate(f[-GENRES:]) if flag == "1"]
            self.items[int(f[0])] = (key, genres, [side_weight / np.sqrt(len(genres))] * len(genres))
        self.nkeys = SIDE + 1 + len(people) + len(films)

    def of(self, position: int, user: int, item: int, rating: float) -> Rating:
        """A rating with its features; ``KeyError`` names an unknown user or item."""
        if user not in self.users:
            raise KeyError(f"user {user} is not in the users file")
        if item not in self.items:
            raise KeyError(f"item {item} is not in the items file")
        (ukey, uside, uvalues), (ikey, iside, ivalues) = self.users[user], self.items[item]
        return Rating(position, ukey, ikey, np.array(uside + iside), np.array([1.0, 1.0, *uvalues, *ivalues]), rating)

    def matrix(self, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        """The feature vectors of (user, item) pairs as rows, over the columns of ``FM.model()``:
        side features first, then the keys after ``SIDE``."""
        rows, cols, vals = [], [], []
        for i, (user, item) in enumerate(zip(users.tolist(), items.tolist())):
            r = self.of(i, user, item, 0.0)
            columns = [self.nside + r.user - SIDE - 1, self.nside + r.item - SIDE - 1, *r.side.tolist()]
            rows += [i] * len(columns)
            cols += columns
            vals += r.values.tolist()
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(users), self.nside + self.nkeys - SIDE - 1))


def _fields(path: Path, line: str, number: int, at_least: int) -> list[str]:
    fields = line.split("|")
    if len(fields) < at_least:
        raise ValueError(f"{path}:{number}: expected at least {at_least} '|'-separated fields: {line[:60]!r}")
    return fields


class FMLogic(GatherLogic):
    """SGD steps with AdaGrad step sizes; keeps the running mean and the online (prequential)
    squared error of the ratings it saw."""

    def __init__(self, job: "FM") -> None:
        super().__init__()
        self.job = job
        self.total, self.sse, self.count = 0.0, 0.0, 0
        self.lo, self.hi = np.inf, -np.inf

    def keys_of(self, record: Rating) -> list[int]:
        return [SIDE, record.user, record.item]

    def on_values(self, record: Rating, values: list[np.ndarray], ps: ParamAccess) -> None:
        job, k1, x = self.job, self.job.rank + 1, record.values
        block, urow, irow = values
        rows = np.vstack([urow, irow, block[record.side]])
        w, V = rows[:, 0], rows[:, 1:k1]
        vx = V * x[:, None]
        s = vx.sum(axis=0)
        mu = self.total / self.count if self.count else record.rating
        y = mu + float(w @ x + 0.5 * (s @ s - np.sum(vx * vx)))
        self.sse += ((min(max(y, self.lo), self.hi) if self.count else y) - record.rating) ** 2
        self.total, self.count = self.total + record.rating, self.count + 1
        self.lo, self.hi = min(self.lo, record.rating), max(self.hi, record.rating)
        e = record.rating - y
        grad = np.empty((len(x), k1))
        grad[:, 0] = e * x - job.reg * w
        grad[:, 1:] = e * x[:, None] * (s - vx) - job.reg_factors * V
        squared = grad * grad
        deltas = np.hstack([job.learning_rate * grad / (np.sqrt(rows[:, k1:] + squared) + EPS), squared])
        ps.push(record.user, deltas[0])
        ps.push(record.item, deltas[1])
        side = np.zeros_like(block)
        side[record.side] = deltas[2:]
        ps.push(SIDE, side)


class FM(StreamJob):
    """A 2-way factorization machine over a stream of ``user item rating [time]`` lines.

    ``users``, ``items``: the side-feature files (MovieLens ``u.user`` / ``u.item``); ``test``:
    ratings to evaluate the final model on; ``rank``: factors per feature; ``learning_rate``:
    AdaGrad's base step; ``reg``, ``reg_factors``: L2 penalties of the weights and factors;
    ``init_std``: spread of the initial factors; ``side_weight``: the value of side features;
    ``seed``: of the initial factors. Writes ``summary.tsv`` (the ratings' mean, the online RMSE
    of the stream, the test RMSE) and ``model.npy`` (``w, v`` rows: side features, then users
    and items by sorted id).
    """

    def __init__(self, stream: StreamSettings, users: InputPath, items: InputPath, test: InputPath | None = None,
                 rank: PositiveInt = 10, learning_rate: PositiveFloat = 0.1, reg: NonNegativeFloat = 0.01,
                 reg_factors: NonNegativeFloat = 0.05, init_std: NonNegativeFloat = 0.01,
                 side_weight: NonNegativeFloat = 0.3, seed: NonNegativeInt = 0) -> None:
        super().__init__(stream)
        self.test = test
        self.rank, self.learning_rate, self.reg, self.reg_factors = rank, learning_rate, reg, reg_factors
        self.init_std, self.seed = init_std, seed
        self.features = SideFeatures(Path(users), Path(items), side_weight)
        self.test_rmse = float("nan")

    def parse(self, line: str, position: int) -> Rating | None:
        fields = line.split()
        if not fields:
            return None
        try:
            return self.features.of(position, int(fields[0]), int(fields[1]), float(fields[2]))
        except (ValueError, IndexError):
            raise ValueError("not 'user item rating [time]'") from None
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    def partition_key(self, record: Rating) -> int:
        return record.position

    def param_init(self, key: int) -> np.ndarray:
        """Weights 0, factors from N(0, init_std) by a generator seeded by ``(seed, key)``, no
        squared gradients yet: a row, or for ``SIDE`` the block of every side feature's row."""
        rows = np.zeros((self.features.nside if key == SIDE else 1, 2 * (self.rank + 1)))
        rows[:, 1:self.rank + 1] = np.random.default_rng([self.seed, key]).normal(0.0, self.init_std,
                                                                                  (len(rows), self.rank))
        return rows if key == SIDE else rows[0]

    def worker_logic(self) -> FMLogic:
        return FMLogic(self)

    def model(self) -> np.ndarray:
        """The ``w, v`` rows of every feature as the servers hold them now (side features first,
        then users and items; zeros for those no rating had)."""
        width = self.rank + 1
        model = np.zeros((self.features.nside + self.features.nkeys - SIDE - 1, width))
        for key, value in self.paracel_readall().items():
            if key == SIDE:
                model[:self.features.nside] = value[:, :width]
            else:
                model[self.features.nside + key - SIDE - 1] = value[:width]
        return model

    def predict(self, model: np.ndarray, mu: float, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predictions of ``model`` (see ``model()``) around the mean ``mu`` for (user, item) pairs."""
        X, w, V = self.features.matrix(users, items), model[:, 0], model[:, 1:]
        return mu + X @ w + 0.5 * np.sum((X @ V) ** 2 - X.multiply(X) @ (V * V), axis=1)

    def after_stream(self, logic: FMLogic) -> None:
        total, sse, count = self.allreduce(np.array([logic.total, logic.sse, logic.count]))
        lo, hi = self.allreduce(np.array([logic.lo]), op="min")[0], self.allreduce(np.array([logic.hi]), op="max")[0]
        model = self.model()
        if self.test:  # each worker scores its share of the test ratings
            test = self.paracel_load(self.test, fmt="ratings")
            predictions = np.clip(self.predict(model, total / count, test["user"], test["item"]), lo, hi)
            test_sse, test_count = self.allreduce(np.array([np.sum((predictions - test["rating"]) ** 2),
                                                            len(predictions)]))
            self.test_rmse = rmse(float(test_sse), float(test_count))
        if self.get_worker_id() == 0:
            np.save(self.output_dir / "model.npy", model)
            write_summary(self, mean=total / count, online_rmse=rmse(float(sse), float(count)),
                          test_rmse=self.test_rmse)
