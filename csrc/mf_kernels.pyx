# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The biased factor model shared by matrix factorization (SGD), ALS and the cold-start tree.

Every algorithm keeps one row per entity in the layout ``[f_0 .. f_{k-1}, bias]`` (shape
``(n, k + 1)``, float64, C-contiguous), so a user or an item is a single parameter-server
value and prediction is ``mu + u[k] + v[k] + u[:k] . v[:k]``. Ratings are three parallel
arrays: ``users`` and ``items`` (int32 row indices into the user and item matrices) and
``ratings`` (float64). The inner loops are Cython over whole arrays; the Python-level helpers
at the end (initial rows, squared error, the ALS half-step) are the model's other shared parts.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport sqrt
from libc.stdint cimport int32_t, int64_t

cnp.import_array()


cdef extern from *:
    """
    /* Four partial sums break the add-latency chain of the dot product; restrict lets the
       compiler vectorise the row update (a user row and an item row never overlap). */
    static inline double mf_dot(const double* __restrict a, const double* __restrict b, Py_ssize_t k) {
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        Py_ssize_t f = 0;
        for (; f + 4 <= k; f += 4) {
            s0 += a[f] * b[f]; s1 += a[f + 1] * b[f + 1];
            s2 += a[f + 2] * b[f + 2]; s3 += a[f + 3] * b[f + 3];
        }
        for (; f < k; ++f) s0 += a[f] * b[f];
        return (s0 + s1) + (s2 + s3);
    }
    /* One rating's factor step of SVD++ (plain biased SGD when imp is all zero): the user
       moves along e*q, the item along e*(p + imp), and grad gathers e*q for the user's
       implicit vectors. */
    static inline void mf_sgd_step(double* __restrict u, double* __restrict v, const double* __restrict imp,
                                   double* __restrict grad, Py_ssize_t k, double lr, double e, double reg) {
        for (Py_ssize_t f = 0; f < k; ++f) {
            double pu = u[f], qi = v[f];
            grad[f] += e * qi;
            u[f] = pu + lr * (e * qi - reg * pu);
            v[f] = qi + lr * (e * (pu + imp[f]) - reg * qi);
        }
    }
    """
    double mf_dot(const double* a, const double* b, Py_ssize_t k) noexcept nogil
    void mf_sgd_step(double* u, double* v, const double* imp, double* grad, Py_ssize_t k, double lr, double e,
                     double reg) noexcept nogil


cdef inline double _predict_one(const double* u, const double* v, Py_ssize_t k, double mu) noexcept nogil:
    return mu + u[k] + v[k] + mf_dot(u, v, k)


def sgd_epoch(const int64_t[::1] indptr, const int32_t[::1] items, const double[::1] ratings,
              const int64_t[::1] user_order, double[:, ::1] U, double[:, ::1] V, double mu,
              double lr, double reg, double reg_bias, double lr_implicit=0.0, double reg_implicit=0.0) -> float:
    """Run one SGD pass over the ratings, user by user in ``user_order``, updating ``U`` and
    ``V`` in place; returns the sum of the squared errors met (a running train SSE).

    The ratings are grouped by user as CSR rows: user ``u`` (row ``u`` of ``U``) rated
    ``items[indptr[u]:indptr[u + 1]]`` (rows of ``V``), visited in that order. Each step uses
    the error of the rating before its own update (Funk/Koren): factors get
    ``lr * (e * other - reg * self)``, biases ``lr * (e - reg_bias * b)``.

    Item rows of ``k + 1`` columns give biased MF. Rows of ``2k + 1`` columns
    ``[q_0 .. q_{k-1}, bias, y_0 .. y_{k-1}]`` add SVD++'s implicit term (Koren 2008): the
    user's vector is ``p_u + |N(u)|^-1/2 * sum_{j in N(u)} y_j`` over the items it rated, and
    after the user's ratings each of its ``y_j`` moves once by
    ``lr_implicit * (|N(u)|^-1/2 * sum_r e_r q_r - reg_implicit * y_j)``.
    Raises ValueError when the shapes disagree.
    """
    cdef Py_ssize_t k = U.shape[1] - 1
    cdef bint implicit = V.shape[1] == 2 * k + 1
    if k < 0 or not (implicit or V.shape[1] == k + 1):
        raise ValueError(f"user rows have {U.shape[1]} columns, item rows {V.shape[1]} (need k+1 or 2k+1)")
    if items.shape[0] != ratings.shape[0]:
        raise ValueError("items and ratings must have the same length")
    if indptr.shape[0] != U.shape[0] + 1 or indptr[U.shape[0]] != ratings.shape[0]:
        raise ValueError(f"indptr needs {U.shape[0] + 1} offsets ending at {ratings.shape[0]}")
    imp_arr = np.zeros(k)
    grad_arr = np.zeros(k)
    cdef double* imp = <double*> cnp.PyArray_DATA(imp_arr)
    cdef double* grad = <double*> cnp.PyArray_DATA(grad_arr)
    cdef Py_ssize_t t, f, r, lo, hi, n_users = user_order.shape[0]
    cdef int64_t ui
    cdef double e, norm, sse = 0.0
    cdef double* u
    cdef double* v
    with nogil:
        for t in range(n_users):
            ui = user_order[t]
            if ui < 0 or ui >= U.shape[0]:
                with gil:
                    raise IndexError(f"user {ui} in user_order is not a row of U ({U.shape[0]} rows)")
            lo, hi = indptr[ui], indptr[ui + 1]
            if hi == lo:
                continue
            norm = 1.0 / sqrt(<double>(hi - lo))
            for f in range(k):
                imp[f] = 0.0
                grad[f] = 0.0
            if implicit:
                for r in range(lo, hi):
                    v = &V[items[r], k + 1]
                    for f in range(k):
                        imp[f] += v[f]
                for f in range(k):
                    imp[f] *= norm
            u = &U[ui, 0]
            for r in range(lo, hi):
                v = &V[items[r], 0]
                e = ratings[r] - _predict_one(u, v, k, mu)
                if implicit:
                    e -= mf_dot(imp, v, k)
                sse += e * e
                u[k] += lr * (e - reg_bias * u[k])
                v[k] += lr * (e - reg_bias * v[k])
                mf_sgd_step(u, v, imp, grad, k, lr, e, reg)
            if implicit:
                for r in range(lo, hi):
                    v = &V[items[r], k + 1]
                    for f in range(k):
                        v[f] += lr_implicit * (norm * grad[f] - reg_implicit * v[f])
    return sse


def fold_implicit(const int64_t[::1] indptr, const int32_t[::1] items, const double[:, ::1] U,
                  const double[:, ::1] V):
    """The model as plain ``[f, bias]`` rows: ``(U', V')`` with each user's implicit term
    ``|N(u)|^-1/2 * sum y_j`` (``sgd_epoch``'s layout) added to its factors and the ``y`` columns
    dropped from the items, so ``predict`` gives SVD++'s prediction. Rows of ``k + 1`` columns
    (no implicit term) come back as they are."""
    cdef Py_ssize_t k = U.shape[1] - 1
    if V.shape[1] == k + 1:
        return np.asarray(U), np.asarray(V)
    if V.shape[1] != 2 * k + 1 or indptr.shape[0] != U.shape[0] + 1:
        raise ValueError(f"user rows have {U.shape[1]} columns, item rows {V.shape[1]}, indptr {indptr.shape[0]}")
    out = np.array(U)
    cdef double[:, ::1] o = out
    cdef Py_ssize_t ui, r, f
    cdef double norm
    with nogil:
        for ui in range(U.shape[0]):
            if indptr[ui + 1] == indptr[ui]:
                continue
            norm = 1.0 / sqrt(<double>(indptr[ui + 1] - indptr[ui]))
            for r in range(indptr[ui], indptr[ui + 1]):
                for f in range(k):
                    o[ui, f] += norm * V[items[r], k + 1 + f]
    return out, np.ascontiguousarray(V[:, :k + 1])


def predict(const int32_t[::1] users, const int32_t[::1] items, const double[:, ::1] U,
            const double[:, ::1] V, double mu, double lo=-1e300, double hi=1e300) -> np.ndarray:
    """Predicted ratings (float64, one per pair), clipped to ``[lo, hi]``."""
    cdef Py_ssize_t n = users.shape[0]
    cdef Py_ssize_t k = U.shape[1] - 1
    if V.shape[1] != k + 1:
        raise ValueError(f"user rows have {U.shape[1]} columns, item rows {V.shape[1]}")
    if items.shape[0] != n:
        raise ValueError("users and items must have the same length")
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] o = out
    cdef Py_ssize_t t
    cdef double p
    with nogil:
        for t in range(n):
            p = _predict_one(&U[users[t], 0], &V[items[t], 0], k, mu)
            o[t] = lo if p < lo else (hi if p > hi else p)
    return out


def als_normal_equations(const int32_t[::1] rows, const int32_t[::1] cols, const double[::1] ratings,
                         const double[:, ::1] other, Py_ssize_t n_rows, double mu, double bias_feature):
    """Accumulate the normal equations of one ALS half-step.

    Solving for row x (shape k+1, layout ``[factors, bias]``) against the fixed rows of
    ``other``: each rating contributes feature ``y = [other[c, :k], bias_feature]`` and target
    ``r - mu - other[c, k]``. Returns ``(A, b, counts)``: ``A`` (n_rows, k+1, k+1) sums of
    ``y y^T``, ``b`` (n_rows, k+1) sums of ``target * y``, ``counts`` (n_rows,) ratings per row.
    ``bias_feature = 0`` turns the biases off (they solve to 0).
    """
    cdef Py_ssize_t n = rows.shape[0]
    cdef Py_ssize_t d = other.shape[1]
    cdef Py_ssize_t k = d - 1
    if cols.shape[0] != n or ratings.shape[0] != n:
        raise ValueError("rows, cols and ratings must have the same length")
    A_arr = np.zeros((n_rows, d, d), dtype=np.float64)
    b_arr = np.zeros((n_rows, d), dtype=np.float64)
    cnt_arr = np.zeros(n_rows, dtype=np.int64)
    cdef double[:, :, ::1] A = A_arr
    cdef double[:, ::1] b = b_arr
    cdef int64_t[::1] cnt = cnt_arr
    cdef double[::1] y = np.empty(d, dtype=np.float64)
    cdef Py_ssize_t t, i, j
    cdef int32_t row, col
    cdef double tgt
    with nogil:
        for t in range(n):
            row = rows[t]
            col = cols[t]
            if row < 0 or row >= n_rows:
                with gil:
                    raise IndexError(f"row index {row} out of range [0, {n_rows})")
            for i in range(k):
                y[i] = other[col, i]
            y[k] = bias_feature
            tgt = ratings[t] - mu - other[col, k]
            cnt[row] += 1
            for i in range(d):
                b[row, i] += tgt * y[i]
                # Upper triangle only; mirrored once per row below, not once per rating.
                for j in range(i, d):
                    A[row, i, j] += y[i] * y[j]
        for row in range(n_rows):
            for i in range(d):
                for j in range(i + 1, d):
                    A[row, j, i] = A[row, i, j]
    return A_arr, b_arr, cnt_arr


# -- Python-level parts of the model, shared by the algorithms that use it

def initial_rows(all_ids, ids, rank, std, seed):
    """Initial rows (len(ids), rank+1) for ``ids``: factors N(0, std^2) and bias 0 for an id in
    the sorted ``all_ids``, a zero row for any other id. A row depends only on the id's place
    in ``all_ids`` and the seed, so every worker (and every worker count) starts it the same."""
    table = np.zeros((len(all_ids), rank + 1))
    table[:, :rank] = np.random.default_rng(seed).normal(0.0, std, (len(all_ids), rank))
    known = np.isin(ids, all_ids)
    out = np.zeros((len(ids), rank + 1))
    out[known] = table[np.searchsorted(all_ids, ids[known])]
    return out


def squared_error(users, items, ratings, U, V, mu, lo, hi):
    """(sum of squared errors, predictions clipped to ``[lo, hi]``) of ratings given as row
    indices (int32) into ``U`` and ``V``."""
    pred = predict(users, items, U, V, mu, lo, hi)
    return float(np.sum((pred - ratings) ** 2)), pred


def solve_rows(rows, cols, ratings, other, n_rows, mu, lam, biases=True):
    """One ALS half-step: the (n_rows, k+1) rows minimising the weighted-lambda objective
    against the fixed ``other`` rows, given ratings as row/col indices (int32). A row with no
    ratings solves to zero (the prior)."""
    A, b, counts = als_normal_equations(rows, cols, ratings, other, n_rows, mu, 1.0 if biases else 0.0)
    # lambda * max(n, 1) keeps a row without ratings solvable (it then solves to 0).
    A += (lam * np.maximum(counts, 1))[:, None, None] * np.eye(other.shape[1])
    return np.linalg.solve(A, b[..., None])[..., 0]
