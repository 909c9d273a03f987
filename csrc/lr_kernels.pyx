# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Logistic-regression loops over the samples of a CSR matrix (logistic regression's kernels).

A sample is a CSR row (``indptr`` int32/int64, ``indices`` int32 column indices into ``w``,
``data`` float64) with a label ``t`` in {0, 1}. The model ``w`` (float64) holds the feature
weights at the rows' column indices and the intercept at index ``bias``; the margin of a row
is ``z = x . w + w[bias]`` and its loss ``log(1 + exp(z)) - t z`` (the logistic loss, computed
without overflow). Every loop runs without the GIL over whole arrays.
"""
import numpy as np
from libc.math cimport exp, log1p, fabs
from libc.stdint cimport int32_t, int64_t

ctypedef fused index_t:
    int32_t
    int64_t


cdef inline double _margin(const index_t[::1] indptr, const int32_t[::1] indices,
                           const double[::1] data, const double[::1] w, Py_ssize_t bias,
                           Py_ssize_t row) noexcept nogil:
    cdef double z = w[bias]
    cdef index_t k
    for k in range(indptr[row], indptr[row + 1]):
        z += data[k] * w[indices[k]]
    return z


cdef inline double _loss(double z, double t) noexcept nogil:
    # softplus(z) - t z, with softplus(z) = max(z, 0) + log1p(exp(-|z|))
    return (z if z > 0 else 0.0) + log1p(exp(-fabs(z))) - t * z


cdef inline double _sigmoid(double z) noexcept nogil:
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


def _check(indptr, indices, data, labels, w, Py_ssize_t bias) -> None:
    n = labels.shape[0]
    if indptr.shape[0] != n + 1:
        raise ValueError(f"indptr has {indptr.shape[0]} entries for {n} labels (needs n + 1)")
    if indices.shape[0] != data.shape[0]:
        raise ValueError("indices and data must have the same length")
    if not 0 <= bias < w.shape[0]:
        raise ValueError(f"bias index {bias} outside a model of {w.shape[0]} weights")


def loss_grad(const index_t[::1] indptr, const int32_t[::1] indices, const double[::1] data,
              const double[::1] labels, const double[::1] w, Py_ssize_t bias, double[::1] grad) -> float:
    """The summed logistic loss of every row at ``w``; writes its gradient into ``grad``.

    ``grad`` (same length as ``w``) is overwritten with ``sum_i (sigmoid(z_i) - t_i) x_i``
    (the intercept's entry at ``bias``). Sums, not means: the caller normalises (by the
    sample count of every worker together). Raises ValueError when the shapes disagree.
    """
    _check(indptr, indices, data, labels, w, bias)
    if grad.shape[0] != w.shape[0]:
        raise ValueError(f"grad has {grad.shape[0]} entries, w {w.shape[0]}")
    cdef Py_ssize_t n = labels.shape[0], i
    cdef index_t k
    cdef double z, r, total = 0.0
    with nogil:
        grad[:] = 0.0
        for i in range(n):
            z = _margin(indptr, indices, data, w, bias, i)
            total += _loss(z, labels[i])
            r = _sigmoid(z) - labels[i]
            grad[bias] += r
            for k in range(indptr[i], indptr[i + 1]):
                grad[indices[k]] += r * data[k]
    return total


def sgd(const index_t[::1] indptr, const int32_t[::1] indices, const double[::1] data,
        const double[::1] labels, const int64_t[::1] order, double[::1] w, Py_ssize_t bias,
        double lr, double reg, Py_ssize_t batch_size) -> float:
    """Mini-batch SGD over the rows in ``order``, updating ``w`` in place; the summed loss of
    the visited rows, each at the model its mini-batch started from.

    Consecutive ``batch_size`` rows of ``order`` form a mini-batch: their residuals are taken
    at the same ``w``, then every row moves ``w[j] -= lr / b * (r * x_j + reg * w[j])`` for each
    of its features ``j`` and ``w[bias] -= lr / b * r`` (``b`` the batch's size; the L2 term is
    applied to the features a row touches, so a sparse step stays sparse).
    Raises ValueError when the shapes disagree or ``batch_size`` < 1.
    """
    _check(indptr, indices, data, labels, w, bias)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cdef Py_ssize_t n = order.shape[0], start, stop, t, row, j
    cdef index_t k
    cdef double step, r, total = 0.0
    cdef double[::1] residual = np.empty(min(batch_size, max(n, 1)))
    with nogil:
        start = 0
        while start < n:
            stop = start + batch_size if start + batch_size < n else n
            for t in range(start, stop):
                row = order[t]
                r = _margin(indptr, indices, data, w, bias, row)
                total += _loss(r, labels[row])
                residual[t - start] = _sigmoid(r) - labels[row]
            step = lr / (stop - start)
            for t in range(start, stop):
                row = order[t]
                r = residual[t - start]
                w[bias] -= step * r
                for k in range(indptr[row], indptr[row + 1]):
                    j = indices[k]
                    w[j] -= step * (r * data[k] + reg * w[j])
            start = stop
    return total
