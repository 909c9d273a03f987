"""Matrix factorization by SGD with biases, model-parallel on the parameter server.

Each worker owns the users of its shard (ratings shuffled by user), keeps their factors and
biases locally, and shares the items through the parameter server: every round it pulls the
item rows its ratings need, runs one SGD epoch over its ratings in Cython, and pushes the
change of each item row as an ``add`` delta before ``iter_commit()``, so SSP bounds how stale
the item rows it starts from may be. A user or an item is one row ``[f_0 .. f_{k-1}, bias]``;
prediction is ``mu + b_u + b_i + p_u . q_i``. ALS (``paracel.algorithms.als``) reuses the helpers here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from paracel import paralg
from paracel._ext import mf_kernels

# Items and users share one key space on the servers; a user key never collides with an item.
USER_KEY_BASE = 1 << 40


@dataclass
class Shard:
    """This worker's ratings: raw ``users`` and ``items`` ids (int64) and ``ratings`` (float64)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def rows(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (int32) of each rating's user in ``user_ids`` and item in ``item_ids``,
        sorted tables that must hold every id of the shard."""
        return (np.searchsorted(user_ids, self.users).astype(np.int32),
                np.searchsorted(item_ids, self.items).astype(np.int32))


def load_shard(alg: paralg, path: str, by: str = "user") -> Shard:
    """Collective: load ``user item rating [ts]`` lines so that every rating of a user
    (``by="user"``, Paracel's fmap) or of an item (``by="item"``, smap) is on one worker."""
    if by not in ("user", "item"):
        raise ValueError(f"by must be 'user' or 'item', not {by!r}")
    table = alg.paracel_load(path, fmt="ratings", shuffle="fmap" if by == "user" else "smap")
    return Shard(table["user"], table["item"], table["rating"])


def empty_shard() -> Shard:
    """A shard without ratings (no test file)."""
    return Shard(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def allreduce(comm: MPI.Intracomm, values: np.ndarray, op: MPI.Op = MPI.SUM) -> np.ndarray:
    """Element-wise ``op`` over the workers of a float64 array (buffer-based, no pickling)."""
    send = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty_like(send)
    comm.Allreduce(send, out, op=op)
    return out


def global_ids(comm: MPI.Intracomm, local_ids: np.ndarray) -> np.ndarray:
    """Sorted union over all workers of ``local_ids`` (int64)."""
    return np.unique(np.concatenate(comm.allgather(np.unique(local_ids))).astype(np.int64))


@dataclass(frozen=True)
class RatingScale:
    """The training ratings' global ``mean`` and range ``[lo, hi]`` (predictions are clipped to it)."""

    mean: float
    lo: float
    hi: float


def rating_scale(comm: MPI.Intracomm, ratings: np.ndarray) -> RatingScale:
    """Collective: the mean and range of all workers' training ratings; raises ValueError
    when no worker has any."""
    total, count = allreduce(comm, np.array([ratings.sum(), ratings.size]))
    if count == 0:
        raise ValueError("no training ratings on any worker")
    lo, neg_hi = allreduce(comm, np.array([ratings.min(initial=np.inf), -ratings.max(initial=-np.inf)]), MPI.MIN)
    return RatingScale(float(total / count), float(lo), float(-neg_hi))


def initial_rows(all_ids: np.ndarray, ids: np.ndarray, rank: int, std: float, seed: int) -> np.ndarray:
    """Initial rows (n, rank+1) for ``ids``: factors N(0, std^2) and bias 0 for an id in the
    sorted ``all_ids``, a zero row for any other id. A row depends only on the id's place in
    ``all_ids`` and the seed, so every worker (and every worker count) starts it the same."""
    table = np.zeros((len(all_ids), rank + 1))
    table[:, :rank] = np.random.default_rng(seed).normal(0.0, std, (len(all_ids), rank))
    known = np.isin(ids, all_ids)
    out = np.zeros((len(ids), rank + 1))
    out[known] = table[np.searchsorted(all_ids, ids[known])]
    return out


def pull_rows(alg: paralg, keys: np.ndarray, width: int, on_server: np.ndarray) -> np.ndarray:
    """Rows (len(keys), width) read from the servers where ``on_server`` is true, zero
    elsewhere (ids seen only in a test file have no row on the servers)."""
    out = np.zeros((len(keys), width))
    if on_server.any():
        out[on_server] = np.asarray(alg.paracel_read_multi(keys[on_server], as_array=True),
                                    dtype=np.float64).reshape(-1, width)
    return out


def squared_error(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, U: np.ndarray,
                  V: np.ndarray, scale: RatingScale) -> tuple[float, np.ndarray]:
    """(sum of squared errors, predictions clipped to the rating range) of ratings given as
    row indices (int32) into ``U`` and ``V``."""
    pred = mf_kernels.predict(users, items, U, V, scale.mean, scale.lo, scale.hi)
    return float(np.sum((pred - ratings) ** 2)), pred


def rmse_from_sums(sse: float, count: float) -> float:
    """Root mean squared error from a sum of squared errors and a count (nan when empty)."""
    return float(np.sqrt(sse / count)) if count else float("nan")


def item_keys(ids: np.ndarray) -> np.ndarray:
    """Parameter-server keys (int64) of item ids."""
    return np.asarray(ids, dtype=np.int64)


def user_keys(ids: np.ndarray) -> np.ndarray:
    """Parameter-server keys (int64) of user ids."""
    return np.asarray(ids, dtype=np.int64) + USER_KEY_BASE


def dump_rows(alg: paralg, name: str, ids: np.ndarray, rows: np.ndarray) -> None:
    """Dump rows as ``NAME_<worker>.txt``: ``id<TAB>f_0,...,f_{k-1},bias`` lines."""
    alg.paracel_dump(name, dict(zip(ids.tolist(), rows)))


def write_predictions(path: Path, shard: Shard, pred: np.ndarray) -> None:
    """Write ``user<TAB>item<TAB>rating<TAB>prediction`` lines."""
    with open(path, "w") as out:
        for u, i, r, p in zip(shard.users.tolist(), shard.items.tolist(), shard.ratings.tolist(), pred.tolist()):
            out.write(f"{u}\t{i}\t{r:g}\t{p:.6f}\n")


def write_summary(alg: paralg, mu: float, test_rmse: float) -> None:
    """Worker 0 writes ``summary.tsv``: the global mean and the final test RMSE."""
    if alg.get_worker_id() == 0:
        (alg.output_dir / "summary.tsv").write_text(f"global_mean\t{mu:.9g}\ntest_rmse\t{test_rmse:.6f}\n")


def log_rounds(alg: paralg, local: np.ndarray) -> list[dict[str, float]]:
    """Combine per-round local rows ``[train_sse, train_n, test_sse, test_n, seconds]`` over
    the workers (sums; the slowest worker's time), log them from worker 0 and return them."""
    comm = alg.worker_comm
    sums = allreduce(comm, local[:, :4])
    slowest = allreduce(comm, local[:, 4], MPI.MAX)
    history = [{"train_rmse": rmse_from_sums(s[0], s[1]), "test_rmse": rmse_from_sums(s[2], s[3]),
                "seconds": float(t)} for s, t in zip(sums, slowest)]
    if alg.get_worker_id() == 0:
        for step, metrics in enumerate(history):
            alg.log_metrics(step, **metrics)
    return history


class MF(paralg):
    """Biased matrix factorization by SGD (Funk/Koren) with user-partitioned ratings.

    ``train``/``test``: rating files (``user item rating [ts]``); ``rank``: factors per row;
    ``learning_rate`` decays by ``decay`` each round; ``reg`` regularises factors and
    ``reg_bias`` biases; ``init_std``: spread of the initial factors; ``rounds``: SGD epochs.
    Writes ``item_factors_0.txt`` and ``user_factors_<w>.txt`` (see ``dump_rows``),
    ``predictions_<w>.tsv`` (test ratings), ``summary.tsv`` (global mean, final test RMSE) and
    one metrics row per round (train and test RMSE, seconds since training began).
    """

    def __init__(self, train: str, test: str | None = None, rank: int = 50, rounds: int = 30,
                 learning_rate: float = 0.03, decay: float = 0.9, reg: float = 0.08,
                 reg_bias: float = 0.05, init_std: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if rank < 1 or rounds < 1 or learning_rate <= 0 or not 0 < decay <= 1 or reg < 0 or reg_bias < 0:
            raise ValueError("need rank >= 1, rounds >= 1, learning_rate > 0, 0 < decay <= 1, reg and reg_bias >= 0")
        self.train, self.test = train, test
        self.rank, self.rounds = rank, rounds
        self.learning_rate, self.decay = learning_rate, decay
        self.reg, self.reg_bias, self.init_std, self.seed = reg, reg_bias, init_std, seed
        self.history: list[dict[str, float]] = []
        self.test_rmse = float("nan")

    def solve(self) -> None:
        comm, wid, nw = self.worker_comm, self.get_worker_id(), self.get_worker_size()
        width = self.rank + 1
        train = load_shard(self, self.train)
        test = load_shard(self, self.test) if self.test else empty_shard()
        scale = rating_scale(comm, train.ratings)
        mu = scale.mean
        all_users, all_items = global_ids(comm, train.users), global_ids(comm, train.items)
        # Every worker writes an interleaved share of the item rows, so the table is whole
        # before anyone pulls.
        share = all_items[wid::nw]
        self.paracel_write_multi(item_keys(share), initial_rows(all_items, share, self.rank, self.init_std, self.seed))
        # Local tables also hold test-only users and items, as zero rows nobody trains.
        my_users = np.unique(np.concatenate([train.users, test.users]))
        my_items = np.unique(np.concatenate([train.items, test.items]))
        U = initial_rows(all_users, my_users, self.rank, self.init_std, self.seed + 1)
        keys, on_server = item_keys(my_items), np.isin(my_items, all_items)
        trained = np.isin(my_items, train.items)
        train_u, train_i = train.rows(my_users, my_items)
        test_u, test_i = test.rows(my_users, my_items)
        self.set_total_iters(self.rounds)
        self.sync()

        rng = np.random.default_rng(self.seed + 2 + wid)
        local = np.zeros((self.rounds, 5))
        start = time.perf_counter()
        for rnd in range(self.rounds):
            V0 = pull_rows(self, keys, width, on_server)
            V = V0.copy()
            sse = mf_kernels.sgd_epoch(train_u, train_i, train.ratings, rng.permutation(train.ratings.size),
                                       U, V, mu, self.learning_rate * self.decay ** rnd, self.reg, self.reg_bias)
            self.paracel_bupdate_multi(keys[trained], (V - V0)[trained], fn="add")
            test_sse, _ = squared_error(test_u, test_i, test.ratings, U, V, scale)
            self.iter_commit()
            local[rnd] = (sse, train.ratings.size, test_sse, test.ratings.size, time.perf_counter() - start)
        self.history = log_rounds(self, local)

        self.sync()  # every round's deltas are applied before the final model is read
        V = pull_rows(self, keys, width, on_server)
        test_sse, pred = squared_error(test_u, test_i, test.ratings, U, V, scale)
        total = allreduce(comm, np.array([test_sse, test.ratings.size]))
        self.test_rmse = rmse_from_sums(total[0], total[1])
        write_summary(self, mu, self.test_rmse)
        dump_rows(self, "user_factors", my_users, U)
        if self.test:
            write_predictions(self.output_dir / f"predictions_{wid}.tsv", test, pred)
        if wid == 0:
            dump_rows(self, "item_factors", all_items, pull_rows(self, item_keys(all_items), width, np.ones(len(all_items), bool)))
