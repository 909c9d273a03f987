"""Truncated SVD of a large sparse matrix held as row blocks by the workers.

Method: subspace iteration with Rayleigh-Ritz on the Gram operator G = A^T A. Every worker
holds a block of rows A_p, so G V = sum_p A_p^T (A_p V): each worker computes its (n x l) term
and the terms are summed across workers; the small l-dimensional work (Rayleigh-Ritz, QR) is
repeated identically on every worker, so no other data moves. Ritz pairs are tested by their
residual |G v - theta v| each iteration, which is free because G V is already at hand; the
squared singular values converge with ratio (sigma_{l+1} / sigma_k)^2 per step, hence the
oversampling. Left singular vectors are local: U_p = A_p V / sigma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from paracel import paralg
from paracel.params import InputPath, NonNegativeInt, PositiveInt, UnitInterval

GramApply = Callable[[np.ndarray], np.ndarray]
#: ``progress(iteration, theta, residuals)``: the top-k Ritz values (squared singular values) and
#: their relative residuals after each iteration.
Progress = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass
class SVDResult:
    """Top-k singular triplets' shared part: values descending, right vectors ``(n, k)``."""

    values: np.ndarray
    right: np.ndarray
    iterations: int
    residuals: np.ndarray  # |A^T A v - sigma^2 v| / sigma^2 per triplet at the last iteration

    def left_block(self, rows: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Left singular vectors restricted to a block of rows of A: ``rows @ V / sigma``."""
        return np.asarray(rows @ self.right) / self.values


def gram_of_block(rows: sp.spmatrix | np.ndarray) -> GramApply:
    """V -> A_p^T (A_p V) for one worker's rows; the caller sums it across workers."""
    a = sp.csr_matrix(rows, dtype=np.float64) if sp.issparse(rows) else np.asarray(rows, np.float64)
    at = a.T.tocsr() if sp.issparse(a) else a.T
    return lambda v: np.asarray(at @ np.asarray(a @ v))


def _canonical_signs(v: np.ndarray) -> np.ndarray:
    """Flip columns so each one's largest-magnitude entry is positive (a deterministic choice)."""
    pivot = v[np.argmax(np.abs(v), axis=0), np.arange(v.shape[1])]
    return v * np.where(pivot < 0, -1.0, 1.0)


def subspace_svd(gram: GramApply, n: int, k: int, oversample: int = 10, tol: float = 1e-8,
                 max_iter: int = 500, seed: int = 0, progress: Progress | None = None) -> SVDResult:
    """Top-``k`` singular values and right vectors of A, given ``gram(V) = A^T A V``.

    ``n`` is the number of columns of A. Iterates on ``k + oversample`` vectors until every
    wanted Ritz pair has relative residual |G v - theta v| / theta <= ``tol`` (the singular
    values are then accurate to about tol^2 / relative gap), or raises ``RuntimeError`` after
    ``max_iter`` iterations. Deterministic for a given ``seed``, so workers that all run it
    on the same summed products get identical results. ``progress`` is told of every iteration.
    """
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    width = min(n, k + max(0, oversample))
    rng = np.random.default_rng(seed)
    basis, _ = la.qr(rng.standard_normal((n, width)), mode="economic")
    for it in range(1, max_iter + 1):
        image = gram(basis)
        small = basis.T @ image
        theta, w = la.eigh((small + small.T) / 2)
        theta, w = theta[::-1], w[:, ::-1]
        ritz, ritz_image = basis @ w, image @ w
        scale = np.where(theta[:k] > 0, theta[:k], 1.0)
        resid = np.linalg.norm(ritz_image[:, :k] - ritz[:, :k] * theta[:k], axis=0) / scale
        if progress is not None:
            progress(it, theta[:k], resid)
        if np.all(resid <= tol) or width == n:
            values = np.sqrt(np.clip(theta[:k], 0.0, None))
            return SVDResult(values, _canonical_signs(ritz[:, :k]), it, resid)
        basis, _ = la.qr(ritz_image, mode="economic")
    raise RuntimeError(f"subspace SVD did not reach tol={tol} in {max_iter} iterations "
                       f"(worst residual {resid.max():.2e}); raise max_iter or oversample")


class SVD(paralg):
    """Truncated SVD of the users x items rating matrix in ``input`` (needs no staleness: every
    Gram product is summed across the workers with ``allreduce``).

    Workers own users (rows, ``fmap``); each iteration sums A_p^T A_p V over the workers.
    Writes ``singular_values.txt`` and ``right_vectors.npy`` (worker 0; row = item id) and
    ``left_vectors_<w>.npy`` (row ids in ``left_ids_<w>.npy``), and logs each iteration's worst
    relative residual and largest singular value.
    """

    def __init__(self, input: InputPath, k: PositiveInt = 20, oversample: NonNegativeInt = 10,
                 tol: UnitInterval = 1e-8, max_iter: PositiveInt = 500,
                 seed: NonNegativeInt = 0) -> None:
        super().__init__()
        self.input, self.k, self.oversample, self.tol = input, k, oversample, tol
        self.max_iter, self.seed = max_iter, seed
        self.result: SVDResult | None = None

    def solve(self) -> None:
        ratings = self.paracel_load_ratings(self.input, by="user")
        rows, users = ratings.matrix(), np.unique(ratings.users)
        local = gram_of_block(rows)
        res = subspace_svd(lambda v: self.allreduce(local(v)), rows.shape[1], self.k, self.oversample,
                           self.tol, self.max_iter, self.seed, self._log_iteration)
        self.result = res
        wid, out = self.get_worker_id(), self.output_dir
        np.save(out / f"left_ids_{wid}.npy", users)
        np.save(out / f"left_vectors_{wid}.npy", res.left_block(rows[users]))
        if wid == 0:
            np.savetxt(out / "singular_values.txt", res.values, fmt="%.17g")
            np.save(out / "right_vectors.npy", res.right)

    def _log_iteration(self, iteration: int, theta: np.ndarray, residuals: np.ndarray) -> None:
        if self.get_worker_id() == 0:
            self.log_metrics(iteration, worst_residual=float(residuals.max()),
                             sigma_1=float(np.sqrt(max(theta[0], 0.0))))
