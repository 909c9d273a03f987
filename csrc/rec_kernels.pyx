# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Item neighbourhoods shared by the recommendation algorithms (similarity, adjusted top-k).

The inner loops (top-k selection under thresholds, the adjusted-k search) are Cython over
whole arrays; the Python-level part at the end holds ranked neighbour lists (``Neighbors``)
and the blockwise similarity top-k built on those loops. Every ranking here orders candidates
by (value descending, id ascending), so equal values are always broken by the smaller id and
results never depend on the input order.
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
cimport numpy as cnp
from libc.math cimport isnan
from libc.stdint cimport int64_t, uint8_t
from libcpp.algorithm cimport partial_sort
from libcpp.pair cimport pair
from libcpp.vector cimport vector

cnp.import_array()

ctypedef pair[double, int64_t] cand_t  # (-value, id): the default pair order is our ranking


cdef inline void _select(vector[cand_t]& cand, Py_ssize_t k, int64_t* out_ids,
                         double* out_vals, Py_ssize_t* n_out) noexcept nogil:
    cdef Py_ssize_t m = <Py_ssize_t>cand.size()
    cdef Py_ssize_t t
    if k < m:
        m = k
    partial_sort(cand.begin(), cand.begin() + m, cand.end())
    for t in range(m):
        out_ids[t] = cand[t].second
        out_vals[t] = -cand[t].first
    n_out[0] = m


def _check_exclude(excl_indptr, excl_indices, Py_ssize_t n_rows):
    excl_indptr = np.ascontiguousarray(excl_indptr, dtype=np.int64)
    excl_indices = np.ascontiguousarray(excl_indices, dtype=np.int64)
    if excl_indptr.shape[0] != n_rows + 1:
        raise ValueError(f"exclude indptr has {excl_indptr.shape[0]} entries, expected {n_rows + 1}")
    return excl_indptr, excl_indices


def topk_csr(const int64_t[::1] indptr, const int64_t[::1] indices, const double[::1] values,
             Py_ssize_t k, double min_value, const double[::1] counts, double min_count,
             excl_indptr, excl_indices, Py_ssize_t n_cols):
    """Top-``k`` entries of every row of a CSR matrix, as a CSR of at most ``k`` per row.

    An entry is a candidate when ``value >= min_value``, ``counts[e] >= min_count`` (``counts``
    may be empty to skip that test), its value is not NaN and its column is not listed for that
    row in the exclude CSR (``excl_indptr``/``excl_indices``). Rows are ranked by value
    descending, ties by column ascending. Returns ``(out_indptr, out_ids, out_values)``.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef bint use_counts = counts.shape[0] > 0
    if use_counts and counts.shape[0] != values.shape[0]:
        raise ValueError("counts and values differ in length")
    if k < 0:
        raise ValueError("k must be >= 0")
    ex_p, ex_i = _check_exclude(excl_indptr, excl_indices, n_rows)
    cdef const int64_t[::1] xp = ex_p
    cdef const int64_t[::1] xi = ex_i
    out_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    out_ids = np.empty(n_rows * k, dtype=np.int64)
    out_vals = np.empty(n_rows * k, dtype=np.float64)
    cdef int64_t[::1] op = out_indptr
    cdef int64_t[::1] oi = out_ids
    cdef double[::1] ov = out_vals
    cdef uint8_t[::1] banned = np.zeros(n_cols, dtype=np.uint8)
    cdef vector[cand_t] cand
    cdef Py_ssize_t r, e, pos = 0, got = 0
    cdef int64_t c
    cdef double v
    with nogil:
        for r in range(n_rows):
            for e in range(xp[r], xp[r + 1]):
                banned[xi[e]] = 1
            cand.clear()
            for e in range(indptr[r], indptr[r + 1]):
                c = indices[e]
                v = values[e]
                if banned[c] or isnan(v) or v < min_value:
                    continue
                if use_counts and counts[e] < min_count:
                    continue
                cand.push_back(cand_t(-v, c))
            for e in range(xp[r], xp[r + 1]):
                banned[xi[e]] = 0
            if k > 0:
                _select(cand, k, &oi[pos], &ov[pos], &got)
            else:
                got = 0
            pos += got
            op[r + 1] = pos
    return out_indptr, out_ids[:pos].copy(), out_vals[:pos].copy()


def topk_dense(values, Py_ssize_t k, double min_value, excl_indptr, excl_indices):
    """Top-``k`` columns of every row of a dense matrix; same rules and result as ``topk_csr``
    (the matrix is viewed as a CSR holding every entry)."""
    dense = np.ascontiguousarray(values, dtype=np.float64)
    n_rows, n_cols = dense.shape
    indptr = np.arange(n_rows + 1, dtype=np.int64) * n_cols
    indices = np.tile(np.arange(n_cols, dtype=np.int64), n_rows)
    return topk_csr(indptr, indices, dense.reshape(-1), k, min_value, np.empty(0), 0.0,
                    excl_indptr, excl_indices, n_cols)


def adjust_ktop(const int64_t[::1] nbr_indptr, const int64_t[::1] nbr_ids, const double[::1] nbr_sims,
                const int64_t[::1] item_ids, const int64_t[::1] col_indptr,
                const int64_t[::1] col_users, const double[::1] col_ratings,
                Py_ssize_t n_users, Py_ssize_t low_limit, double rel_tol):
    """Paracel's adjust_ktop_sparse search: the best neighbourhood size of every item.

    Row ``r`` of the neighbour CSR (``nbr_*``, ranked best first) belongs to item
    ``item_ids[r]``; ``col_*`` is the rating matrix by item column (CSC: ``col_indptr`` over
    all items, users ascending). For each prefix size k >= ``low_limit`` the item's own ratings
    are predicted from its k nearest neighbours (similarity-weighted mean of the neighbours'
    ratings by the same user; the item's mean rating where no neighbour was rated) and the
    squared residual summed over its raters. Returns ``(best_k, best_residual)``; best_k is the
    smallest k whose residual is within ``rel_tol`` (relative) of the minimum, 0 for an item
    with fewer than ``low_limit`` neighbours or no raters.
    """
    cdef Py_ssize_t n_rows = item_ids.shape[0]
    if nbr_indptr.shape[0] != n_rows + 1:
        raise ValueError("neighbour indptr does not match item_ids")
    best_k_arr = np.zeros(n_rows, dtype=np.int64)
    best_res_arr = np.full(n_rows, np.nan)
    cdef int64_t[::1] best_k = best_k_arr
    cdef double[::1] best_res = best_res_arr
    cdef uint8_t[::1] rated = np.zeros(n_users, dtype=np.uint8)  # raters of the item in hand
    cdef double[::1] num = np.zeros(n_users, dtype=np.float64)
    cdef double[::1] den = np.zeros(n_users, dtype=np.float64)
    cdef vector[double] res
    cdef Py_ssize_t r, t, e, kk, n_nbr
    cdef int64_t j, v, u
    cdef double mean_j, s, pred, diff, total, lowest
    with nogil:
        for r in range(n_rows):
            j = item_ids[r]
            n_nbr = nbr_indptr[r + 1] - nbr_indptr[r]
            if n_nbr < low_limit or col_indptr[j + 1] == col_indptr[j] or low_limit < 1:
                continue
            mean_j = 0.0
            for e in range(col_indptr[j], col_indptr[j + 1]):
                rated[col_users[e]] = 1
                mean_j += col_ratings[e]
            mean_j /= col_indptr[j + 1] - col_indptr[j]
            res.clear()
            for t in range(n_nbr):
                v = nbr_ids[nbr_indptr[r] + t]
                s = nbr_sims[nbr_indptr[r] + t]
                for e in range(col_indptr[v], col_indptr[v + 1]):
                    u = col_users[e]
                    if rated[u]:
                        num[u] += s * col_ratings[e]
                        den[u] += s
                if t + 1 < low_limit:
                    continue
                # recomputed from scratch (users ascending) so the sum never drifts with k
                total = 0.0
                for e in range(col_indptr[j], col_indptr[j + 1]):
                    u = col_users[e]
                    pred = num[u] / den[u] if den[u] != 0.0 else mean_j
                    diff = col_ratings[e] - pred
                    total += diff * diff
                res.push_back(total)
            lowest = res[0]
            for kk in range(1, <Py_ssize_t>res.size()):
                if res[kk] < lowest:
                    lowest = res[kk]
            for kk in range(<Py_ssize_t>res.size()):
                if res[kk] <= lowest + rel_tol * (1.0 + lowest):
                    best_k[r] = kk + low_limit
                    best_res[r] = res[kk]
                    break
            for e in range(col_indptr[j], col_indptr[j + 1]):
                u = col_users[e]
                rated[u] = 0
                num[u] = 0.0
                den[u] = 0.0
    return best_k_arr, best_res_arr


# -- Python-level: ranked neighbour lists and the similarity top-k built on the loops above

MEASURES = ("cosine", "jaccard")


@dataclass
class Neighbors:
    """Ranked neighbour lists in CSR form: row ``r`` belongs to item ``item_ids[r]`` and its
    neighbours are ``ids[indptr[r]:indptr[r+1]]`` with similarities ``sims[...]``, best first."""

    item_ids: np.ndarray
    indptr: np.ndarray
    ids: np.ndarray
    sims: np.ndarray

    def row(self, r) -> tuple:
        """(neighbour ids, similarities) of row ``r``."""
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.ids[lo:hi], self.sims[lo:hi]

    def to_csr(self, n_items) -> sp.csr_matrix:
        """The lists as an ``n_items x n_items`` sparse matrix (rows of absent items empty)."""
        rows = np.repeat(self.item_ids, np.diff(self.indptr))
        return sp.csr_matrix((self.sims, (rows, self.ids)), shape=(n_items, n_items))

    def as_text(self) -> dict:
        """``item -> "nbr:sim nbr:sim ..."`` (best first, full precision), for ``paracel_dump``."""
        return {int(item): " ".join(f"{j}:{s:.17g}" for j, s in zip(*self.row(r)))
                for r, item in enumerate(self.item_ids.tolist())}

    @staticmethod
    def concat(parts) -> "Neighbors":
        """Join the lists of disjoint item sets, in the order given."""
        offsets = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
        return Neighbors(np.concatenate([p.item_ids for p in parts]), indptr.astype(np.int64),
                         np.concatenate([p.ids for p in parts]), np.concatenate([p.sims for p in parts]))

    @staticmethod
    def empty() -> "Neighbors":
        """No items."""
        return Neighbors(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))


def _self_exclusion(item_ids):
    return np.arange(len(item_ids) + 1, dtype=np.int64), np.asarray(item_ids, dtype=np.int64)


def _blocks(n, block):
    for lo in range(0, n, block):
        yield lo, min(n, lo + block)


def dense_topk(own_ids, vectors, topk, min_sim=-np.inf, block=512) -> Neighbors:
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
        indptr, nbr, val = topk_dense(sims, topk, min_sim, *_self_exclusion(ids))
        parts.append(Neighbors(ids, indptr, nbr, val))
    return Neighbors.concat(parts) if parts else Neighbors.empty()


def sparse_topk(own_ids, ratings, topk, measure="cosine", min_sim=-np.inf, min_cooc=1,
                block=512) -> Neighbors:
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
        indptr, nbr, val = topk_csr(
            dots.indptr.astype(np.int64), dots.indices.astype(np.int64), sims, topk, min_sim,
            cooc.data, float(min_cooc), *_self_exclusion(ids), r.shape[1])
        parts.append(Neighbors(ids, indptr, nbr, val))
    return Neighbors.concat(parts) if parts else Neighbors.empty()
