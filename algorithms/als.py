"""Alternating least squares with biases and weighted-lambda regularisation (Zhou et al. 2008).

Both factor tables live on the parameter server, one row ``[f_0 .. f_{k-1}, bias]`` per user
and per item. Each worker holds its ratings twice: grouped by user (it owns those users) and
grouped by item (it owns those items). A round is two half-steps, each ended by ``sync()``:
solve the owned users against the item rows pulled from the servers and write them; then solve
the owned items against the pulled user rows and write them. A row ``x``
solves ``(sum_j y_j y_j^T + lambda * n_x * I) x = sum_j (r_j - mu - b_j) y_j`` with
``y_j = [f_j, 1]``, in Cython (the sums) and batched LAPACK (the solves):
``paracel._ext.mf_kernels.solve_rows``.
"""
from __future__ import annotations

import time

import numpy as np

from paracel import paralg
from paracel._ext import mf_kernels
from paracel.errors import ParacelError
from paracel.metrics import FitLog, write_summary
from paracel.params import InputPath, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from paracel.ratings import Ratings

# Items and users share one key space on the servers: an item's key is its id, a user's key
# its id plus this base, so the two never collide.
USER_KEY_BASE = 1 << 40


class ALS(paralg):
    """Biased ALS with weighted-lambda regularisation (bulk-synchronous: each half-step reads
    every row the other one wrote, whatever the job's staleness).

    ``train``/``test``: rating files; ``rank``: factors per row; ``lam``: lambda;
    ``rounds``: full (user + item) iterations; ``biases``: learn user and item biases.
    Writes ``item_factors_<w>.txt``, ``user_factors_<w>.txt`` (``id<TAB>f_0,...,bias``),
    ``predictions_<w>.tsv``, ``summary.tsv`` and one metrics row per round. Raises
    ``ParacelError`` naming the round when the training error stops being finite.
    """

    def __init__(self, train: InputPath, test: InputPath | None = None, rank: PositiveInt = 20,
                 rounds: PositiveInt = 15, lam: PositiveFloat = 0.12, biases: bool = True,
                 init_std: NonNegativeFloat = 0.1, seed: NonNegativeInt = 0) -> None:
        super().__init__()
        self.train, self.test, self.rank, self.rounds = train, test, rank, rounds
        self.lam, self.biases, self.init_std, self.seed = lam, biases, init_std, seed
        self.history: list[dict[str, float]] = []
        self.test_rmse = float("nan")

    def solve(self) -> None:
        wid, width = self.get_worker_id(), self.rank + 1
        by_user = self.paracel_load_ratings(self.train, by="user")
        by_item = self.paracel_load_ratings(self.train, by="item")
        test = self.paracel_load_ratings(self.test) if self.test else Ratings.empty()
        mu, lo, hi = by_user.stats.mean, by_user.stats.lo, by_user.stats.hi
        all_items = self.union_ids(by_item.items)
        # Owned users include test-only ones: with no ratings they solve to the zero row. The user
        # step and the test predictions need the rows of seen_items, the item step of item_users.
        my_users, seen_items = by_user.id_maps(test)
        item_users, my_items = by_item.id_maps()
        on_server = np.isin(seen_items.ids, all_items)
        u_rows, u_cols = by_user.local_indices(my_users, seen_items)
        i_cols, i_rows = by_item.local_indices(item_users, my_items)
        test_u, test_i = test.local_indices(my_users, seen_items)
        self.paracel_write_multi(my_items.ids, mf_kernels.initial_rows(all_items, my_items.ids, self.rank,
                                                                       self.init_std, self.seed))
        self.set_total_iters(self.rounds)
        # sync() after each half-step (not iter_commit): the next one must see every row just
        # written, whatever staleness the job runs with.
        self.sync()

        log = FitLog(self.rounds)
        start = time.perf_counter()
        for rnd in range(self.rounds):
            items_needed = self.paracel_read_rows(seen_items.ids, width, on_server)
            U = mf_kernels.solve_rows(u_rows, u_cols, by_user.values, items_needed, len(my_users), mu, self.lam,
                                      self.biases)
            self.paracel_write_multi(my_users.ids + USER_KEY_BASE, U)
            self.sync()
            users_needed = self.paracel_read_rows(item_users.ids + USER_KEY_BASE, width)
            V = mf_kernels.solve_rows(i_rows, i_cols, by_item.values, users_needed, len(my_items), mu, self.lam,
                                      self.biases)
            self.paracel_write_multi(my_items.ids, V)
            self.sync()
            V_seen = self.paracel_read_rows(seen_items.ids, width, on_server)
            train_sse, _ = mf_kernels.squared_error(u_rows, u_cols, by_user.values, U, V_seen, mu, lo, hi)
            if not np.isfinite(train_sse):
                raise ParacelError(f"ALS diverged in round {rnd} on worker {wid}: the train squared error is "
                                   f"{train_sse}")
            test_sse, pred = mf_kernels.squared_error(test_u, test_i, test.values, U, V_seen, mu, lo, hi)
            log.record(rnd, train_sse=train_sse, train_n=len(by_user), test_sse=test_sse, test_n=len(test),
                       seconds=time.perf_counter() - start)
            log.log_round(self, rnd)
        self.history = log.log(self)
        self.test_rmse = self.history[-1]["test_rmse"]

        write_summary(self, global_mean=mu, test_rmse=self.test_rmse)
        self.paracel_dump("user_factors", dict(zip(my_users.ids.tolist(), U)))
        self.paracel_dump("item_factors", dict(zip(my_items.ids.tolist(), V)))
        if self.test:
            test.write_predictions(self.output_dir / f"predictions_{wid}.tsv", pred)
