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

from typing import Literal

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel._ext import rec_kernels
from paracel._ext.rec_kernels import Neighbors, sparse_topk
from paracel.params import InputPath, PositiveInt


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


class KTop(paralg):
    """Adjusted top-k item-based recommendation from a ratings file (``input``).

    Workers own items (``fmap``): they assemble the whole rating matrix from every worker's
    share, compute their items' similarity lists (``rec_kernels.sparse_topk``) and adjusted k,
    and assemble the cut lists of every item the same way; then each worker recommends ``n``
    items to its users (user id % workers == worker id). With a ``test`` file it logs
    precision@n. Writes ``best_k_<w>.txt`` and ``recommendations_<w>.txt``.
    """

    def __init__(self, input: InputPath, test: InputPath | None = None,
                 measure: Literal["cosine", "jaccard"] = "cosine", topk: PositiveInt = 50,
                 min_sim: float | None = None, min_cooc: PositiveInt = 1, low_limit: PositiveInt = 5,
                 n: PositiveInt = 10) -> None:
        super().__init__()
        self.input, self.test, self.measure, self.topk = input, test, measure, topk
        self.min_sim = -np.inf if min_sim is None else float(min_sim)
        self.min_cooc, self.low_limit, self.n = min_cooc, low_limit, n
        self.precision = float("nan")

    def solve(self) -> None:
        ratings = self.paracel_load_ratings(self.input, by="item")
        # Each worker holds every rating (and computes every list) of its own items, so the
        # sums over the workers are the whole rating matrix and the whole similarity matrix.
        full = self.allreduce_sparse(ratings.matrix())
        nb = sparse_topk(np.unique(ratings.items), full, self.topk, self.measure, self.min_sim, self.min_cooc)
        best_k, _ = adjust_ktop(nb, full, self.low_limit)
        sim = self.allreduce_sparse(prune(nb, best_k).to_csr(full.shape[1]))
        wid, size = self.get_worker_id(), self.get_worker_size()
        users = np.flatnonzero(np.diff(full.indptr) > 0)
        users = users[users % size == wid]
        recs = recommend(users, full[users], sim, self.n)
        self.paracel_dump("best_k", dict(zip(nb.item_ids.tolist(), best_k.tolist())))
        self.paracel_dump("recommendations", recs.as_text())
        if self.test:
            self._score(recs)

    def _score(self, recs: Neighbors) -> None:
        test = self.paracel_loadall_ratings(self.test)
        shape = (max(test.shape[0], recs.item_ids.max(initial=-1) + 1), test.shape[1])
        prec, users = precision_at(recs, test.matrix(shape), self.n)
        hits, count = self.allreduce(np.array([0.0 if users == 0 else prec * users * self.n, users]))
        self.precision = float(hits / (count * self.n)) if count else float("nan")
        if self.get_worker_id() == 0:
            self.log_metrics(0, precision=self.precision, test_users=int(count))
