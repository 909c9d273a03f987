"""Ridge regression by preconditioned conjugate gradient on the normal equations, data-parallel.

Objective, with n samples over all workers and the intercept ``b`` unpenalised::

    (1 / (2n)) ||y - b - X w||^2 + (lam / 2) ||w||^2

Its minimiser solves ``(Z^T Z + n lam D) v = Z^T y`` with ``Z = [1, X]``, ``v = [b, w]`` and
``D = diag(0, 1, ..., 1)`` (without intercept ``Z = X``, ``D = I``). Every worker holds a block
of rows ``Z_p``; the one product CG needs, ``Z^T Z d = sum_p Z_p^T (Z_p d)``, is summed over the
workers with ``allreduce`` (same bits everywhere), so every worker runs the same CG recurrences
and nothing else moves. The Jacobi preconditioner (the diagonal of the system) is what makes
one-hot features converge in tens of rounds: for them ``Z^T Z`` is nearly diagonal.

The coefficients live on the parameter servers, one int key per entry of ``v``: each round a
worker adds ``alpha d`` to its interleaved share of the keys (one ``paracel_bupdate_multi``)
and ends its clock; the written model is read back from the servers.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel.metrics import write_summary
from paracel.params import InputPath, PositiveFloat, PositiveInt


def one_hot_ratings(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Rows ``[onehot(user) | onehot(item)]`` (n, shape[0] + shape[1]): column ``u`` is user id
    ``u``, column ``shape[0] + i`` item id ``i`` (raw ids, so every worker agrees)."""
    n = len(users)
    cols = np.column_stack([users, shape[0] + np.asarray(items)]).ravel()
    return sp.csr_matrix((np.ones(2 * n), cols, np.arange(0, 2 * n + 1, 2)), shape=(n, sum(shape)))


def with_intercept(X: sp.spmatrix) -> sp.csr_matrix:
    """``[1, X]``: a column of ones in front (column 0 is the intercept)."""
    return sp.hstack([np.ones((X.shape[0], 1)), X], format="csr")


class Ridge(paralg):
    """Ridge regression of ``input`` (see the module docstring for the objective and method).

    ``fmt="ratings"``: ``user item rating [ts]`` lines, regressing the rating on one-hot user
    and item features (``one_hot_ratings``); ``fmt="libsvm"``: ``label idx:val ...`` rows
    (``n_features`` fixes the width). Stops when the normal equations' residual, relative to
    ``Z^T y``, is at most ``tol``; raises ``RuntimeError`` if ``max_iter`` rounds do not get
    there and ``FloatingPointError`` on a non-finite objective. Writes ``coefficients_0.npy``
    (``w``, (n_features,)) and ``summary.tsv`` (intercept, objective, rounds, rmse) from worker
    0, and logs ``objective``, ``rmse`` and ``residual`` (relative) per round.
    """

    def __init__(self, input: InputPath, fmt: Literal["ratings", "libsvm"] = "ratings",
                 n_features: PositiveInt | None = None, lam: PositiveFloat = 1e-4,
                 fit_intercept: bool = True, tol: PositiveFloat = 1e-10,
                 max_iter: PositiveInt = 500) -> None:
        super().__init__()
        if lam <= 0 or tol <= 0 or max_iter < 1:
            raise ValueError("need lam > 0, tol > 0 and max_iter >= 1")
        self.input, self.fmt, self.n_features = input, fmt, n_features
        self.lam, self.fit_intercept, self.tol, self.max_iter = lam, fit_intercept, tol, max_iter
        self.coefficients: np.ndarray | None = None
        self.intercept = 0.0

    def _load(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """This worker's rows and targets; raises ``ValueError`` on a non-finite value."""
        if self.fmt == "ratings":
            ratings = self.paracel_load_ratings(self.input)
            X, y = one_hot_ratings(ratings.users, ratings.items, ratings.shape), ratings.values
        else:
            rows = self.paracel_load(self.input, fmt="libsvm", n_features=self.n_features)
            X, y = rows.X, rows.y
        if not (np.isfinite(X.data).all() and np.isfinite(y).all()):
            raise ValueError(f"{self.input} holds a non-finite feature or target (worker {self.get_worker_id()})")
        return X, y

    def solve(self) -> None:
        X, y = self._load()
        Z = with_intercept(X) if self.fit_intercept else X.tocsr()
        Zt = Z.T.tocsr()
        n = int(self.allreduce(np.array([len(y)]))[0])
        if n == 0:
            raise ValueError(f"no samples in {self.input}")
        penalty = np.full(Z.shape[1], n * self.lam)
        if self.fit_intercept:
            penalty[0] = 0.0
        rhs = self.allreduce(Zt @ y)
        precond = self.allreduce(np.asarray(Z.multiply(Z).sum(axis=0)).ravel()) + penalty
        precond[precond == 0] = 1.0  # an intercept over no rows: nothing to scale
        share = np.arange(self.get_worker_id(), Z.shape[1], self.get_worker_size())
        self.paracel_write_multi(share, np.zeros(len(share)))
        self.set_total_iters(self.max_iter)
        self.sync()

        v, error = np.zeros(Z.shape[1]), y.astype(np.float64)
        residual = rhs.copy()
        z = residual / precond
        direction, rz = z.copy(), residual @ z
        norm_rhs = np.linalg.norm(rhs) or 1.0
        start = time.perf_counter()
        for rnd in range(self.max_iter):
            Zd = Z @ direction
            Ad = self.allreduce(Zt @ Zd) + penalty * direction
            alpha = rz / (direction @ Ad)
            v += alpha * direction
            error -= alpha * Zd
            residual -= alpha * Ad
            self.paracel_bupdate_multi(share, alpha * direction[share])
            self.iter_commit()
            sse = float(self.allreduce(np.array([error @ error]))[0])
            objective = self._objective(sse, n, v)
            relres = float(np.linalg.norm(residual) / norm_rhs)
            if self.get_worker_id() == 0:
                self.log_metrics(rnd, objective=objective, rmse=float(np.sqrt(sse / n)), residual=relres,
                                 seconds=time.perf_counter() - start)
            if relres <= self.tol:
                break
            z = residual / precond
            rz, rz_old = residual @ z, rz
            direction = z + (rz / rz_old) * direction
        else:
            raise RuntimeError(f"ridge CG did not reach tol={self.tol} in {self.max_iter} rounds "
                               f"(relative residual {relres:.2e}); raise max_iter")

        self.sync()  # every round's coefficient deltas are on the servers
        if self.get_worker_id() == 0:
            stored = np.asarray(self.paracel_read_multi(np.arange(Z.shape[1]), as_array=True), np.float64)
            self.intercept = float(stored[0]) if self.fit_intercept else 0.0
            self.coefficients = stored[1:] if self.fit_intercept else stored
            self.paracel_dump("coefficients", self.coefficients)
            write_summary(self, intercept=self.intercept, objective=objective, rounds=rnd + 1,
                          rmse=float(np.sqrt(sse / n)))

    def _objective(self, sse: float, n: int, v: np.ndarray) -> float:
        """The objective at ``v`` given the summed squared error; raises on a non-finite one."""
        w = v[1:] if self.fit_intercept else v
        objective = sse / (2 * n) + 0.5 * self.lam * float(w @ w)
        if not np.isfinite(objective):
            raise FloatingPointError(f"ridge objective became {objective} (lam={self.lam}): overflow "
                                     "or a system too ill-conditioned; rescale the features or raise lam")
        return objective
