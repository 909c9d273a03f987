"""Item similarity (dense cosine; sparse cosine and Jaccard) with Paracel's thresholds.

The numerical core works on one worker's items: it scores them against every item, keeps the
candidates that pass ``min_sim`` / ``min_cooc`` (never the item itself) and the best ``topk``
of each, ranked by similarity descending with ties broken by the smaller item id.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from paracel._ext import rec_kernels

MEASURES = ("cosine", "jaccard")


@dataclass
class Neighbors:
    """Ranked neighbour lists in CSR form: row ``r`` belongs to item ``item_ids[r]`` and its
    neighbours are ``ids[indptr[r]:indptr[r+1]]`` with similarities ``sims[...]``, best first."""

    item_ids: np.ndarray
    indptr: np.ndarray
    ids: np.ndarray
    sims: np.ndarray

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour ids, similarities) of row ``r``."""
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.ids[lo:hi], self.sims[lo:hi]

    def to_csr(self, n_items: int) -> sp.csr_matrix:
        """The lists as an ``n_items x n_items`` sparse matrix (rows of absent items empty)."""
        rows = np.repeat(self.item_ids, np.diff(self.indptr))
        return sp.csr_matrix((self.sims, (rows, self.ids)), shape=(n_items, n_items))

    @staticmethod
    def concat(parts: list["Neighbors"]) -> "Neighbors":
        """Join the lists of disjoint item sets, in the order given."""
        offsets = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
        return Neighbors(np.concatenate([p.item_ids for p in parts]), indptr.astype(np.int64),
                         np.concatenate([p.ids for p in parts]), np.concatenate([p.sims for p in parts]))

    @staticmethod
    def empty() -> "Neighbors":
        """No items."""
        return Neighbors(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))


def _self_exclusion(item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(len(item_ids) + 1, dtype=np.int64), np.asarray(item_ids, dtype=np.int64)


def _blocks(n: int, block: int):
    for lo in range(0, n, block):
        yield lo, min(n, lo + block)


def dense_topk(own_ids: np.ndarray, vectors: np.ndarray, topk: int,
               min_sim: float = -np.inf, block: int = 512) -> Neighbors:
    """Cosine top-``topk`` neighbours of items ``own_ids`` among all rows of ``vectors``.

    ``vectors`` is ``(n_items, d)``, row i the vector of item i (e.g. item factors). Items with a
    zero vector have no neighbours and are nobody's neighbour. Work is done ``block`` items at
    a time so memory stays O(block * n_items).
    """
    own_ids = np.asarray(own_ids, dtype=np.int64)
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = x / norms[:, None]  # zero rows become NaN and are skipped by the kernel
    parts = []
    for lo, hi in _blocks(len(own_ids), block):
        ids = own_ids[lo:hi]
        sims = np.ascontiguousarray(unit[ids] @ unit.T)
        indptr, nbr, val = rec_kernels.topk_dense(sims, topk, min_sim, *_self_exclusion(ids))
        parts.append(Neighbors(ids, indptr, nbr, val))
    return Neighbors.concat(parts) if parts else Neighbors.empty()


def sparse_topk(own_ids: np.ndarray, ratings: sp.spmatrix, topk: int, measure: str = "cosine",
                min_sim: float = -np.inf, min_cooc: int = 1, block: int = 512) -> Neighbors:
    """Top-``topk`` neighbours of items ``own_ids`` from a ``users x items`` rating matrix.

    cosine(i, j) = r_i . r_j / (|r_i| |r_j|) over the rating columns; jaccard(i, j) =
    |U_i & U_j| / |U_i | U_j| over the sets of users who rated each. Only pairs with at least
    ``min_cooc`` (>= 1) common users and similarity >= ``min_sim`` are kept.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if min_cooc < 1:
        raise ValueError("min_cooc must be >= 1 (pairs without common users have no similarity)")
    own_ids = np.asarray(own_ids, dtype=np.int64)
    r = sp.csc_matrix(ratings, dtype=np.float64)
    r.sum_duplicates()
    if np.any(r.data == 0):
        raise ValueError("explicit zero ratings are ambiguous with missing ones; drop them first")
    b = r.copy()
    b.data[:] = 1.0
    norms = np.sqrt(np.asarray(r.multiply(r).sum(axis=0)).ravel())
    support = np.asarray(b.sum(axis=0)).ravel()
    parts = []
    for lo, hi in _blocks(len(own_ids), block):
        ids = own_ids[lo:hi]
        # products of positive entries only: dot and co-occurrence share one sparsity pattern
        dots = sp.csr_matrix(r[:, ids].T @ r)
        cooc = sp.csr_matrix(b[:, ids].T @ b)
        dots.sort_indices()
        cooc.sort_indices()
        if not (np.array_equal(dots.indptr, cooc.indptr) and np.array_equal(dots.indices, cooc.indices)):
            raise ValueError("ratings must be positive (dot and co-occurrence patterns differ)")
        rows = np.repeat(ids, np.diff(dots.indptr))
        if measure == "cosine":
            sims = dots.data / (norms[rows] * norms[dots.indices])
        else:
            sims = cooc.data / (support[rows] + support[dots.indices] - cooc.data)
        indptr, nbr, val = rec_kernels.topk_csr(
            dots.indptr.astype(np.int64), dots.indices.astype(np.int64), sims, topk, min_sim,
            cooc.data, float(min_cooc), *_self_exclusion(ids), r.shape[1])
        parts.append(Neighbors(ids, indptr, nbr, val))
    return Neighbors.concat(parts) if parts else Neighbors.empty()
