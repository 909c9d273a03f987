"""Alternating least squares with biases and weighted-lambda regularisation (Zhou et al. 2008).

Both factor tables live on the parameter server, one row ``[f_0 .. f_{k-1}, bias]`` per user
and per item. Each worker holds its ratings twice: grouped by user (it owns those users) and
grouped by item (it owns those items). A round is two half-steps, each ended by ``sync()``:
solve the owned users against the item rows pulled from the servers and write them; then solve
the owned items against the pulled user rows and write them. A row ``x``
solves ``(sum_j y_j y_j^T + lambda * n_x * I) x = sum_j (r_j - mu - b_j) y_j`` with
``y_j = [f_j, 1]``, in Cython (the sums) and batched LAPACK (the solves).
"""
from __future__ import annotations

import time

import numpy as np

from paracel import paralg
from paracel._ext import mf_kernels

from .mf import (dump_rows, empty_shard, global_ids, initial_rows, item_keys, load_shard,
                 log_rounds, pull_rows, rating_scale, squared_error, user_keys,
                 write_predictions, write_summary)


def solve_rows(rows: np.ndarray, cols: np.ndarray, ratings: np.ndarray, other: np.ndarray,
               n_rows: int, mu: float, lam: float, biases: bool = True) -> np.ndarray:
    """One ALS half-step: the (n_rows, k+1) rows minimising the weighted-lambda objective
    against the fixed ``other`` rows, given ratings as row/col indices (int32). A row with no
    ratings solves to zero (the prior)."""
    A, b, counts = mf_kernels.als_normal_equations(rows, cols, ratings, other, n_rows, mu,
                                                   1.0 if biases else 0.0)
    # lambda * max(n, 1) keeps a row without ratings solvable (it then solves to 0).
    A += (lam * np.maximum(counts, 1))[:, None, None] * np.eye(other.shape[1])
    return np.linalg.solve(A, b[..., None])[..., 0]


class ALS(paralg):
    """Biased ALS with weighted-lambda regularisation (bulk-synchronous: each half-step reads
    every row the other one wrote, whatever the job's staleness).

    ``train``/``test``: rating files; ``rank``: factors per row; ``lam``: lambda;
    ``rounds``: full (user + item) iterations; ``biases``: learn user and item biases.
    Writes ``item_factors_<w>.txt``, ``user_factors_<w>.txt`` (see ``mf.dump_rows``),
    ``predictions_<w>.tsv``, ``summary.tsv`` and one metrics row per round.
    """

    def __init__(self, train: str, test: str | None = None, rank: int = 20, rounds: int = 15,
                 lam: float = 0.12, biases: bool = True, init_std: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if rank < 1 or rounds < 1 or lam <= 0:
            raise ValueError("need rank >= 1, rounds >= 1 and lam > 0")
        self.train, self.test, self.rank, self.rounds = train, test, rank, rounds
        self.lam, self.biases, self.init_std, self.seed = lam, biases, init_std, seed
        self.history: list[dict[str, float]] = []
        self.test_rmse = float("nan")

    def solve(self) -> None:
        comm, wid, width = self.worker_comm, self.get_worker_id(), self.rank + 1
        by_user = load_shard(self, self.train, by="user")
        by_item = load_shard(self, self.train, by="item")
        test = load_shard(self, self.test) if self.test else empty_shard()
        scale = rating_scale(comm, by_user.ratings)
        mu = scale.mean
        all_items = global_ids(comm, by_item.items)
        # Owned users include test-only ones: with no ratings they solve to the zero row.
        my_users = np.unique(np.concatenate([by_user.users, test.users]))
        my_items = np.unique(by_item.items)
        # Item rows the user step and the test predictions need, and user rows the item step needs.
        seen_items = np.unique(np.concatenate([by_user.items, test.items]))
        seen_keys, on_server = item_keys(seen_items), np.isin(seen_items, all_items)
        item_users = np.unique(by_item.users)
        u_rows, u_cols = by_user.rows(my_users, seen_items)
        i_cols, i_rows = by_item.rows(item_users, my_items)
        test_u, test_i = test.rows(my_users, seen_items)
        self.paracel_write_multi(item_keys(my_items), initial_rows(all_items, my_items, self.rank, self.init_std, self.seed))
        self.set_total_iters(self.rounds)
        # sync() after each half-step (not iter_commit): the next one must see every row just
        # written, whatever staleness the job runs with.
        self.sync()

        local = np.zeros((self.rounds, 5))
        start = time.perf_counter()
        for rnd in range(self.rounds):
            U = solve_rows(u_rows, u_cols, by_user.ratings, pull_rows(self, seen_keys, width, on_server),
                           len(my_users), mu, self.lam, self.biases)
            self.paracel_write_multi(user_keys(my_users), U)
            self.sync()
            users_needed = pull_rows(self, user_keys(item_users), width, np.ones(len(item_users), bool))
            V = solve_rows(i_rows, i_cols, by_item.ratings, users_needed, len(my_items), mu, self.lam, self.biases)
            self.paracel_write_multi(item_keys(my_items), V)
            self.sync()
            V_seen = pull_rows(self, seen_keys, width, on_server)
            train_sse, _ = squared_error(u_rows, u_cols, by_user.ratings, U, V_seen, scale)
            test_sse, pred = squared_error(test_u, test_i, test.ratings, U, V_seen, scale)
            local[rnd] = (train_sse, by_user.ratings.size, test_sse, test.ratings.size, time.perf_counter() - start)
        self.history = log_rounds(self, local)
        self.test_rmse = self.history[-1]["test_rmse"]

        write_summary(self, mu, self.test_rmse)
        dump_rows(self, "user_factors", my_users, U)
        dump_rows(self, "item_factors", my_items, V)
        if self.test:
            write_predictions(self.output_dir / f"predictions_{wid}.tsv", test, pred)
