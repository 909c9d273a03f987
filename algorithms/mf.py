"""Matrix factorization by SGD with biases and SVD++'s implicit term, model-parallel on the
parameter server.

Each worker owns the users of its shard (ratings shuffled by user), keeps their rows locally,
and shares the items through the parameter server: every round it pulls the item rows its
ratings need, runs one SGD epoch over its ratings user by user in Cython, and pushes the change
of each item row as an ``add`` delta before ``iter_commit()``, so SSP bounds how stale the item
rows it starts from may be. A user row is ``[p_0 .. p_{k-1}, bias]``; an item row is
``[q_0 .. q_{k-1}, bias]``, followed by SVD++'s implicit vector ``y_0 .. y_{k-1}`` when
``implicit`` (the model of ``paracel._ext.mf_kernels.sgd_epoch``). Prediction is
``mu + b_u + b_i + (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j) . q_i``.

Workers that share an item each move it by a whole epoch over their own ratings of it, so
their deltas are mixed, not summed (see ``mixing_weights``).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from paracel import paralg
from paracel._ext import mf_kernels
from paracel.errors import ParacelError
from paracel.metrics import FitLog, rmse, write_summary
from paracel.params import InputPath, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from paracel.ratings import Ratings

if TYPE_CHECKING:
    from paracel.loading import IdMap


def mixing_weights(counts: np.ndarray, lr: float) -> np.ndarray:
    """Per item, the factor on each worker's epoch delta of that item, from ``counts`` (W, n):
    the item's training ratings on each worker, and this round's step ``lr``.

    Model: an epoch contracts an item's bias toward its target by ``1 - lr`` per rating, so
    worker w moves it by the fraction ``rho_w = 1 - (1 - lr)^c_w`` of the gap, and one serial
    epoch over all its ratings by ``rho = 1 - (1 - lr)^C``. Scaling every delta by
    ``rho / sum_w rho_w`` makes the mixed move that of the serial epoch when the workers pull
    toward the same target: the plain sum while ``lr * C << 1``, the mean once every worker's
    epoch converges, and never past the target (``rho <= 1``), for any number of workers.
    Summing instead multiplies the move by up to the number of workers sharing the item, which
    diverges once that exceeds two.
    """
    keep = min(max(1.0 - lr, 0.0), 1.0)
    moved = 1.0 - keep ** counts
    total = moved.sum(axis=0)
    serial = 1.0 - keep ** counts.sum(axis=0)
    return np.divide(serial, total, out=np.ones_like(total), where=total > 0)


class MF(paralg):
    """Biased matrix factorization by SGD (Funk/Koren), with SVD++'s implicit feedback when
    ``implicit``, on user-partitioned ratings.

    ``train``/``test``: rating files (``user item rating [ts]``); ``rank``: factors per row;
    ``learning_rate`` (and ``learning_rate_implicit`` for the ``y`` vectors) decay by ``decay``
    each round; ``reg`` regularises factors, ``reg_bias`` biases, ``reg_implicit`` the ``y``
    vectors; ``init_std``: spread of the initial factors; ``rounds``: SGD epochs.
    Writes ``item_factors_0.txt`` and ``user_factors_<w>.txt`` (``id<TAB>f_0,...,bias``; a
    user's factors include its implicit term, so the two files predict without ``y``),
    ``item_implicit_0.txt`` (the ``y`` vectors, when ``implicit``), ``predictions_<w>.tsv``
    (test ratings), ``summary.tsv`` (global mean, final test RMSE) and one metrics row per round
    (train and test RMSE, seconds since training began). Raises ``ParacelError`` naming the
    round when the training error stops being finite (a diverged run writes no model).
    """

    def __init__(self, train: InputPath, test: InputPath | None = None, rank: PositiveInt = 50,
                 rounds: PositiveInt = 30, learning_rate: PositiveFloat = 0.02, decay: UnitInterval = 0.97,
                 reg: NonNegativeFloat = 0.12, reg_bias: NonNegativeFloat = 0.05, implicit: bool = True,
                 learning_rate_implicit: PositiveFloat = 0.003, reg_implicit: NonNegativeFloat = 0.2,
                 init_std: NonNegativeFloat = 0.05, seed: NonNegativeInt = 0) -> None:
        super().__init__()
        # The annotations are checked when a config is loaded; this keeps a direct
        # construction (tests, notebooks) from starting a job with the same mistakes.
        if (rank < 1 or rounds < 1 or learning_rate <= 0 or learning_rate_implicit <= 0 or not 0 < decay <= 1
                or min(reg, reg_bias, reg_implicit, init_std) < 0):
            raise ValueError("need rank >= 1, rounds >= 1, learning rates > 0, 0 < decay <= 1, "
                             "reg, reg_bias, reg_implicit and init_std >= 0")
        self.train, self.test = train, test
        self.rank, self.rounds = rank, rounds
        self.learning_rate, self.decay, self.learning_rate_implicit = learning_rate, decay, learning_rate_implicit
        self.reg, self.reg_bias, self.reg_implicit = reg, reg_bias, reg_implicit
        self.implicit, self.init_std, self.seed = implicit, init_std, seed
        self.history: list[dict[str, float | None]] = []
        self.test_rmse = float("nan")
        self._saved: dict[str, Any] | None = None  # a checkpoint's state, in a resumed job
        self._live: dict[str, Any] = {}  # what a checkpoint takes: round, U, rng, log

    def save_state(self) -> dict[str, Any]:
        """The rounds done, this worker's user rows, its random generator and its round log."""
        log = self._live["log"]
        return {"round": self._live["round"], "U": self._live["U"],
                "rng": self._live["rng"].bit_generator.state, "log": log.table[:self._live["round"]]}

    def load_state(self, state: dict[str, Any]) -> None:
        self._saved = state

    def solve(self) -> None:
        wid, nw, k = self.get_worker_id(), self.get_worker_size(), self.rank
        width = 2 * k + 1 if self.implicit else k + 1
        train = self.paracel_load_ratings(self.train)
        test = self.paracel_load_ratings(self.test) if self.test else Ratings.empty()
        if train.stats.count == 0:
            raise ValueError("no training ratings on any worker")
        mu, lo, hi = train.stats.mean, train.stats.lo, train.stats.hi
        all_users, all_items = self.union_ids(train.users), self.union_ids(train.items)
        # Every worker writes an interleaved share of the item rows (an item's key is its id),
        # so the table is whole before anyone pulls; the y vectors start at zero.
        if self._saved is None:  # resumed: the servers hold the checkpoint's item rows
            share = all_items[wid::nw]
            initial = np.zeros((len(share), width))
            initial[:, :k + 1] = mf_kernels.initial_rows(all_items, share, k, self.init_std, self.seed)
            self.paracel_write_multi(share, initial)
        # Local tables also hold test-only users and items, as zero rows nobody trains.
        my_users, my_items = train.id_maps(test)
        U = mf_kernels.initial_rows(all_users, my_users.ids, k, self.init_std, self.seed + 1)
        on_server = np.isin(my_items.ids, all_items)
        trained = np.isin(my_items.ids, train.items)
        rng = np.random.default_rng(self.seed + 2 + wid)
        indptr, items, ratings = self._by_user(train, my_users, my_items, rng)
        counts = self._counts_everywhere(all_items, my_items.ids[trained],
                                         np.bincount(items, minlength=len(my_items))[trained])
        test_u, test_i = test.local_indices(my_users, my_items)
        self.set_total_iters(self.rounds)
        self.sync()

        log, first = FitLog(self.rounds), 0
        if self._saved is not None:
            first, U = self._saved["round"], self._saved["U"]
            rng.bit_generator.state = self._saved["rng"]
            log.resume(self._saved["log"])
        self._live = {"round": first, "U": U, "rng": rng, "log": log}
        start = time.perf_counter()
        for rnd in range(first, self.rounds):
            lr, lr_implicit = (rate * self.decay ** rnd for rate in (self.learning_rate, self.learning_rate_implicit))
            V0 = self.paracel_read_rows(my_items.ids, width, on_server)
            V = V0.copy()
            sse = mf_kernels.sgd_epoch(indptr, items, ratings, rng.permutation(len(my_users)), U, V, mu, lr,
                                       self.reg, self.reg_bias, lr_implicit, self.reg_implicit)
            if not np.isfinite(sse):
                raise ParacelError(f"MF diverged in round {rnd} on worker {wid}: the train squared error is {sse} "
                                   f"(try a learning_rate below {self.learning_rate})")
            delta = (V - V0)[trained] * mixing_weights(counts, lr)[:, None]
            self.paracel_bupdate_multi(my_items.ids[trained], delta, fn="add")
            test_sse, _ = mf_kernels.squared_error(test_u, test_i, test.values,
                                                   *mf_kernels.fold_implicit(indptr, items, U, V), mu, lo, hi)
            log.record(rnd, train_sse=sse, train_n=len(train), test_sse=test_sse, test_n=len(test),
                       seconds=time.perf_counter() - start)
            self._live["round"] = rnd + 1
            self.iter_commit()  # may checkpoint: this round is done
            log.log_round(self, rnd)
        self.history = log.log(self)

        self.sync()  # every round's deltas are applied before the final model is read
        V = self.paracel_read_rows(my_items.ids, width, on_server)
        U_out, V_out = mf_kernels.fold_implicit(indptr, items, U, V)
        test_sse, pred = mf_kernels.squared_error(test_u, test_i, test.values, U_out, V_out, mu, lo, hi)
        self.test_rmse = rmse(*self.allreduce(np.array([test_sse, len(test)])))
        write_summary(self, global_mean=mu, test_rmse=self.test_rmse)
        self.paracel_dump("user_factors", dict(zip(my_users.ids.tolist(), U_out)))
        if self.test:
            test.write_predictions(self.output_dir / f"predictions_{wid}.tsv", pred)
        if wid == 0:
            rows = self.paracel_read_rows(all_items, width)
            self.paracel_dump("item_factors", dict(zip(all_items.tolist(), rows[:, :k + 1])))
            if self.implicit:
                self.paracel_dump("item_implicit", dict(zip(all_items.tolist(), rows[:, k + 1:])))

    @staticmethod
    def _by_user(train: Ratings, users: "IdMap", items: "IdMap", rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """The ratings as CSR rows of the local users (``indptr`` int64, local item rows int32,
        values), each user's ratings in a random order drawn once."""
        train_u, train_i = train.local_indices(users, items)
        order = np.lexsort((rng.random(len(train)), train_u))
        indptr = np.searchsorted(train_u[order], np.arange(len(users) + 1)).astype(np.int64)
        return indptr, train_i[order], train.values[order]

    def _counts_everywhere(self, all_items: np.ndarray, ids: np.ndarray, mine: np.ndarray) -> np.ndarray:
        """Collective: (W, len(ids)) every worker's number of training ratings of each item of
        ``ids`` (sorted ids of ``all_items``), given ``mine``, this worker's."""
        at = np.searchsorted(all_items, ids)
        table = np.zeros((1, len(all_items)))
        table[0, at] = mine
        return self.allgather_array(table)[:, at]
