"""Lasso by shotgun coordinate descent (Bradley et al., 2011), samples split over the workers.

Objective, with n samples over all workers (scikit-learn's ``Lasso`` scaling)::

    (1 / (2n)) ||y - b - X w||^2 + alpha ||w||_1

The intercept ``b`` is unpenalised (``fit_intercept``): the columns and ``y`` are centred by
their global means, implicitly (a sparse X stays sparse), and ``b = mean(y) - mean(X) w``.

A round: every worker computes its rows' partial correlations ``X_p^T r_p`` (with the squared
residual and ``r_p . y_p``, one ``allreduce``); the sums give every coordinate's exact
minimiser ``w_j <- S(w_j + c_j / G_jj, n alpha / G_jj)`` and the duality gap. A scheduler
(``paracel._ext.linear_kernels.pick_block``) picks a block of up to ``block_size``
coordinates with a nonzero step (at random or largest step first) whose mutual correlations
are small: each member's summed |correlation| with the others stays below ``max_overlap``
< 1, which keeps the block's Hessian below twice its diagonal, so the simultaneous (shotgun)
update of the block never increases the objective.
The block's updates are published to the parameter servers (one int key per coefficient,
each worker ``add``s the deltas of its share of the block) and every worker updates its own
residuals ``r_p -= X_p[:, B] delta``; the same summed numbers give every worker the same bits.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel._ext.linear_kernels import pick_block
from paracel.metrics import write_summary
from paracel.params import InputPath, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval

Matrix = np.ndarray | sp.csc_matrix


def soft_threshold(z: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """``sign(z) max(|z| - t, 0)`` element-wise."""
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def lasso_gap(c: np.ndarray, sse: float, r_dot_y: float, l1: float, n: int, alpha: float) -> float:
    """The duality gap of the Lasso, in the objective's scaling, at residual ``r`` with
    centred correlations ``c = X^T r``, ``sse = |r|^2``, ``r_dot_y = r . y`` (y centred) and
    ``l1 = |w|_1`` (the dual point is ``r`` scaled into the feasible set, as scikit-learn)."""
    dual_norm = float(np.abs(c).max(initial=0.0))
    scale = min(1.0, n * alpha / dual_norm) if dual_norm > 0 else 1.0
    return (0.5 * sse * (1 + scale ** 2) + n * alpha * l1 - scale * r_dot_y) / n


class Lasso(paralg):
    """L1-regularised least squares by shotgun coordinate descent (see the module docstring).

    ``fmt="csv"``: ``f_1,...,f_k,label`` rows (``n_features`` = k, required);
    ``fmt="libsvm"``: ``label idx:val ...`` rows. ``schedule``: ``"random"`` or ``"greedy"``
    (largest proposed step first). Stops when the duality gap is at most ``tol`` times the
    objective; raises ``RuntimeError`` after ``max_rounds`` rounds without that and
    ``FloatingPointError`` on a non-finite objective. Worker 0 writes ``coefficients_0.npy``
    ((n_features,), read back from the servers) and ``summary.tsv`` (intercept, objective,
    gap, nonzeros, rounds) and logs per round ``objective``, ``gap``, ``nonzeros``, ``block``.
    The summed d x d Gram matrix is held by every worker: meant for up to a few thousand features.
    """

    def __init__(self, input: InputPath, alpha: PositiveFloat, fmt: Literal["csv", "libsvm"] = "libsvm",
                 n_features: PositiveInt | None = None, fit_intercept: bool = True,
                 block_size: PositiveInt = 16, max_overlap: UnitInterval = 0.5,
                 schedule: Literal["random", "greedy"] = "greedy", tol: PositiveFloat = 1e-9,
                 max_rounds: PositiveInt = 5000, seed: NonNegativeInt = 0) -> None:
        super().__init__()
        if alpha <= 0 or block_size < 1 or not 0 < max_overlap <= 1 or tol <= 0 or max_rounds < 1:
            raise ValueError("need alpha > 0, block_size >= 1, 0 < max_overlap <= 1, tol > 0, max_rounds >= 1")
        if fmt == "csv" and n_features is None:
            raise ValueError("fmt='csv' needs n_features (the number of columns before the label)")
        self.input, self.alpha, self.fmt, self.n_features = input, alpha, fmt, n_features
        self.fit_intercept, self.block_size, self.max_overlap = fit_intercept, block_size, max_overlap
        self.schedule, self.tol, self.max_rounds, self.seed = schedule, tol, max_rounds, seed
        self.coefficients: np.ndarray | None = None
        self.intercept = 0.0

    def _load(self) -> tuple[Matrix, np.ndarray]:
        """This worker's rows and labels; raises ``ValueError`` on a non-finite value."""
        rows = self.paracel_load_labeled(self.input, self.fmt, self.n_features)
        X, y = (rows.X.tocsc() if self.fmt == "libsvm" else rows.X.toarray()), rows.y
        if not (np.isfinite(X.data if sp.issparse(X) else X).all() and np.isfinite(y).all()):
            raise ValueError(f"{self.input} holds a non-finite feature or label (worker {self.get_worker_id()})")
        return X, y

    def _centred_gram(self, X: Matrix, y: np.ndarray) -> tuple[int, np.ndarray, float, np.ndarray]:
        """(n, column means, mean of y, Gram matrix of the centred columns) over all workers."""
        d = X.shape[1]
        gram = X.T @ X
        local = np.concatenate([[len(y), y.sum()], np.asarray(X.sum(axis=0)).ravel(),
                                (gram.toarray() if sp.issparse(gram) else gram).ravel()])
        total = self.allreduce(local)
        n = int(total[0])
        if n == 0:
            raise ValueError(f"no samples in {self.input}")
        means = total[2:2 + d] / n if self.fit_intercept else np.zeros(d)
        y_mean = total[1] / n if self.fit_intercept else 0.0
        return n, means, y_mean, total[2 + d:].reshape(d, d) - n * np.outer(means, means)

    def solve(self) -> None:
        X, y = self._load()
        n, x_mean, y_mean, gram = self._centred_gram(X, y)
        d, wid, nw = X.shape[1], self.get_worker_id(), self.get_worker_size()
        sq_norm = np.diag(gram).copy()
        # a column constant over all samples carries nothing once centred: never updated
        live = sq_norm > 1e-12 * max(sq_norm.max(initial=0.0), 1.0)
        scale = np.sqrt(np.where(live, sq_norm, 1.0))
        abs_corr = np.abs(gram) / np.outer(scale, scale)
        share = np.arange(wid, d, nw)
        self.paracel_write_multi(share, np.zeros(len(share)))
        self.set_total_iters(self.max_rounds)
        self.sync()

        rng = np.random.default_rng(self.seed)
        y_centred = y - y_mean
        w, r = np.zeros(d), y_centred.copy()
        start = time.perf_counter()
        for rnd in range(self.max_rounds):
            sums = self.allreduce(np.concatenate([X.T @ r, [r.sum(), r @ r, r @ y_centred]]))
            c = sums[:d] - x_mean * sums[d]  # the centred correlations X_c^T r
            sse, r_dot_y = sums[d + 1], sums[d + 2]
            l1 = float(np.abs(w).sum())
            objective = sse / (2 * n) + self.alpha * l1
            gap = lasso_gap(c[live], sse, r_dot_y, l1, n, self.alpha)
            if not np.isfinite(objective):
                raise FloatingPointError(f"lasso objective became {objective} in round {rnd} (overflow: "
                                         "rescale the features or the labels)")
            step = np.where(live, soft_threshold(w * sq_norm + c, n * self.alpha) / scale ** 2 - w, 0.0)
            moving = np.flatnonzero(step).astype(np.int64)
            order = (moving[np.argsort(-np.abs(step[moving]), kind="stable")] if self.schedule == "greedy"
                     else rng.permutation(moving))
            block = pick_block(order, abs_corr, self.block_size, self.max_overlap)
            if wid == 0:
                self.log_metrics(rnd, objective=objective, gap=gap, nonzeros=int(np.count_nonzero(w)),
                                 block=len(block), seconds=time.perf_counter() - start)
            if gap <= self.tol * objective or not len(block):
                break
            delta = step[block]
            w[block] += delta
            r -= X[:, block] @ delta - x_mean[block] @ delta
            mine = slice(wid, None, nw)
            self.paracel_bupdate_multi(block[mine], delta[mine])
            self.iter_commit()
        else:
            raise RuntimeError(f"lasso did not reach a duality gap of tol={self.tol} x objective in "
                               f"{self.max_rounds} rounds (gap {gap:.2e}); raise max_rounds or block_size")

        self.sync()  # every round's coefficient deltas are on the servers
        if wid == 0:
            self.coefficients = np.asarray(self.paracel_read_multi(np.arange(d), as_array=True), np.float64)
            self.intercept = float(y_mean - x_mean @ self.coefficients)
            self.paracel_dump("coefficients", self.coefficients)
            write_summary(self, intercept=self.intercept, objective=objective, gap=gap,
                          nonzeros=int(np.count_nonzero(self.coefficients)), rounds=rnd + 1)
