# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Inner loops of the recommendation algorithms (similarity top-k, adjusted top-k).

Every ranking here orders candidates by (value descending, id ascending), so equal values are
always broken by the smaller id and results never depend on the input order.
"""
import numpy as np
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
