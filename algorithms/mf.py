"""Matrix factorization by SGD with biases, model-parallel on the parameter server.

Each worker owns the users of its shard (ratings shuffled by user), keeps their factors and
biases locally, and shares the items through the parameter server: every round it pulls the
item rows its ratings need, runs one SGD epoch over its ratings in Cython, and pushes the
change of each item row as an ``add`` delta before ``iter_commit()``, so SSP bounds how stale
the item rows it starts from may be. A user or an item is one row ``[f_0 .. f_{k-1}, bias]``
(the model of ``paracel._ext.mf_kernels``); prediction is ``mu + b_u + b_i + p_u . q_i``.
"""
from __future__ import annotations

import time

import numpy as np

from paracel import paralg
from paracel._ext import mf_kernels
from paracel.metrics import FitLog, rmse, write_summary
from paracel.params import InputPath, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from paracel.ratings import Ratings


class MF(paralg):
    """Biased matrix factorization by SGD (Funk/Koren) with user-partitioned ratings.

    ``train``/``test``: rating files (``user item rating [ts]``); ``rank``: factors per row;
    ``learning_rate`` decays by ``decay`` each round; ``reg`` regularises factors and
    ``reg_bias`` biases; ``init_std``: spread of the initial factors; ``rounds``: SGD epochs.
    Writes ``item_factors_0.txt`` and ``user_factors_<w>.txt`` (``id<TAB>f_0,...,bias``),
    ``predictions_<w>.tsv`` (test ratings), ``summary.tsv`` (global mean, final test RMSE) and
    one metrics row per round (train and test RMSE, seconds since training began).
    """

    def __init__(self, train: InputPath, test: InputPath | None = None, rank: PositiveInt = 50,
                 rounds: PositiveInt = 30, learning_rate: PositiveFloat = 0.03, decay: UnitInterval = 0.9,
                 reg: NonNegativeFloat = 0.08, reg_bias: NonNegativeFloat = 0.05,
                 init_std: NonNegativeFloat = 0.1, seed: NonNegativeInt = 0) -> None:
        super().__init__()
        # The annotations are checked when a config is loaded; this keeps a direct
        # construction (tests, notebooks) from starting a job with the same mistakes.
        if rank < 1 or rounds < 1 or learning_rate <= 0 or not 0 < decay <= 1 or reg < 0 or reg_bias < 0:
            raise ValueError("need rank >= 1, rounds >= 1, learning_rate > 0, 0 < decay <= 1, reg and reg_bias >= 0")
        self.train, self.test = train, test
        self.rank, self.rounds = rank, rounds
        self.learning_rate, self.decay = learning_rate, decay
        self.reg, self.reg_bias, self.init_std, self.seed = reg, reg_bias, init_std, seed
        self.history: list[dict[str, float]] = []
        self.test_rmse = float("nan")

    def solve(self) -> None:
        wid, nw, width = self.get_worker_id(), self.get_worker_size(), self.rank + 1
        train = self.paracel_load_ratings(self.train)
        test = self.paracel_load_ratings(self.test) if self.test else Ratings.empty()
        if train.stats.count == 0:
            raise ValueError("no training ratings on any worker")
        mu, lo, hi = train.stats.mean, train.stats.lo, train.stats.hi
        all_users, all_items = self.union_ids(train.users), self.union_ids(train.items)
        # Every worker writes an interleaved share of the item rows (an item's key is its id),
        # so the table is whole before anyone pulls.
        share = all_items[wid::nw]
        initial = mf_kernels.initial_rows(all_items, share, self.rank, self.init_std, self.seed)
        self.paracel_write_multi(share, initial)
        # Local tables also hold test-only users and items, as zero rows nobody trains.
        my_users, my_items = train.id_maps(test)
        U = mf_kernels.initial_rows(all_users, my_users.ids, self.rank, self.init_std, self.seed + 1)
        on_server = np.isin(my_items.ids, all_items)
        trained = np.isin(my_items.ids, train.items)
        train_u, train_i = train.local_indices(my_users, my_items)
        test_u, test_i = test.local_indices(my_users, my_items)
        self.set_total_iters(self.rounds)
        self.sync()

        rng = np.random.default_rng(self.seed + 2 + wid)
        log = FitLog(self.rounds)
        start = time.perf_counter()
        for rnd in range(self.rounds):
            V0 = self.paracel_read_rows(my_items.ids, width, on_server)
            V = V0.copy()
            sse = mf_kernels.sgd_epoch(train_u, train_i, train.values, rng.permutation(len(train)),
                                       U, V, mu, self.learning_rate * self.decay ** rnd, self.reg, self.reg_bias)
            self.paracel_bupdate_multi(my_items.ids[trained], (V - V0)[trained], fn="add")
            test_sse, _ = mf_kernels.squared_error(test_u, test_i, test.values, U, V, mu, lo, hi)
            self.iter_commit()
            log.record(rnd, train_sse=sse, train_n=len(train), test_sse=test_sse, test_n=len(test),
                       seconds=time.perf_counter() - start)
        self.history = log.log(self)

        self.sync()  # every round's deltas are applied before the final model is read
        V = self.paracel_read_rows(my_items.ids, width, on_server)
        test_sse, pred = mf_kernels.squared_error(test_u, test_i, test.values, U, V, mu, lo, hi)
        self.test_rmse = rmse(*self.allreduce(np.array([test_sse, len(test)])))
        write_summary(self, global_mean=mu, test_rmse=self.test_rmse)
        self.paracel_dump("user_factors", dict(zip(my_users.ids.tolist(), U)))
        if self.test:
            test.write_predictions(self.output_dir / f"predictions_{wid}.tsv", pred)
        if wid == 0:
            self.paracel_dump("item_factors", dict(zip(all_items.tolist(), self.paracel_read_rows(all_items, width))))
