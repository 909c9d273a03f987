"""Adjusted top-k item-based recommendation (Paracel's ``adjust_ktop_sparse``).

Step 1 (Paracel's algorithm): for every item j with ranked neighbours v_1, v_2, ... find the
neighbourhood size k_j that best reconstructs j's own ratings: for each k >= ``low_limit``,
predict a_uj for every rater u of j as the similarity-weighted mean of u's ratings of
v_1..v_k (j's mean rating when u rated none of them) and sum the squared residuals; k_j is the
k of least residual (ties, within a relative 1e-9, go to the smaller k).
Step 2: item-based CF with the adjusted neighbourhoods: user u's score of an unrated item j is
sum over u's rated items v with j among v's k_v best neighbours of r_uv * s(v, j); the top-n
items by score (ties by id) are the recommendations.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from algorithms.similarity import Neighbors
from paracel._ext import rec_kernels


def adjust_ktop(neighbors: Neighbors, ratings: sp.spmatrix, low_limit: int = 1,
                rel_tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Best neighbourhood size and its residual for every row of ``neighbors``.

    ``ratings`` is the full ``users x items`` matrix (the raters of every neighbour are
    needed). Returns ``(best_k, residual)`` aligned with ``neighbors.item_ids``; an item with
    fewer than ``low_limit`` neighbours or no ratings gets k = 0 and residual NaN.
    """
    if low_limit < 1:
        raise ValueError("low_limit must be >= 1")
    csc = sp.csc_matrix(ratings, dtype=np.float64)
    csc.sum_duplicates()
    csc.sort_indices()
    return rec_kernels.adjust_ktop(
        neighbors.indptr.astype(np.int64), neighbors.ids.astype(np.int64),
        neighbors.sims.astype(np.float64), neighbors.item_ids.astype(np.int64),
        csc.indptr.astype(np.int64), csc.indices.astype(np.int64), csc.data,
        csc.shape[0], low_limit, rel_tol)


def prune(neighbors: Neighbors, best_k: np.ndarray) -> Neighbors:
    """Each row cut to its first ``best_k[row]`` neighbours."""
    best_k = np.minimum(np.asarray(best_k, dtype=np.int64), np.diff(neighbors.indptr))
    keep = np.concatenate([np.arange(lo, lo + k) for lo, k in zip(neighbors.indptr[:-1], best_k)]
                          + [np.zeros(0, np.int64)]).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(best_k)]).astype(np.int64)
    return Neighbors(neighbors.item_ids, indptr, neighbors.ids[keep], neighbors.sims[keep])


def recommend(user_ids: np.ndarray, user_ratings: sp.spmatrix, similarity: sp.spmatrix,
              n: int) -> Neighbors:
    """Top-``n`` unrated items for each user (row r of ``user_ratings`` is ``user_ids[r]``).

    ``similarity`` is ``items x items`` with row v holding v's retained neighbours. Returns
    the lists as ``Neighbors`` whose rows are users and whose values are the CF scores.
    """
    rated = sp.csr_matrix(user_ratings, dtype=np.float64)
    rated.sum_duplicates()
    scores = sp.csr_matrix(rated @ sp.csr_matrix(similarity, dtype=np.float64))
    scores.sum_duplicates()
    indptr, ids, vals = rec_kernels.topk_csr(
        scores.indptr.astype(np.int64), scores.indices.astype(np.int64), scores.data, n, -np.inf,
        np.zeros(0), 0.0, rated.indptr.astype(np.int64), rated.indices.astype(np.int64), rated.shape[1])
    return Neighbors(np.asarray(user_ids, dtype=np.int64), indptr, ids, vals)


def precision_at(recs: Neighbors, test: sp.spmatrix, n: int) -> tuple[float, int]:
    """Mean of |top-n ∩ test items| / n over the users of ``recs`` with any test rating.

    ``test`` is indexed by user id (rows) and item id (columns). Returns (precision, users).
    """
    test = sp.csr_matrix(test)
    hits, users = 0, 0
    for r, u in enumerate(recs.item_ids):
        truth = test.indices[test.indptr[u]:test.indptr[u + 1]]
        if len(truth) == 0:
            continue
        users += 1
        hits += np.intersect1d(recs.row(r)[0][:n], truth).size
    return (hits / (n * users) if users else float("nan")), users
