# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Loops over coordinates of the linear models (Lasso's shotgun scheduler)."""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t

cnp.import_array()


def pick_block(const int64_t[::1] order, const double[:, ::1] abs_corr, Py_ssize_t size,
               double max_overlap):
    """Coordinates from ``order`` (int64, in that order) forming a block of at most ``size``
    in which every member's summed ``abs_corr`` ((d, d) float64, C-contiguous) with the other
    members stays below ``max_overlap``; returns them as int64. Raises ``IndexError`` for a
    coordinate outside ``abs_corr``."""
    cdef Py_ssize_t d = abs_corr.shape[0], n = order.shape[0], taken = 0, a, m
    cdef int64_t j
    cdef double links
    cdef bint fits
    if abs_corr.shape[1] != d:
        raise ValueError(f"abs_corr must be square, got {abs_corr.shape[0]} x {abs_corr.shape[1]}")
    for a in range(n):
        if not 0 <= order[a] < d:
            raise IndexError(f"coordinate {order[a]} outside 0..{d - 1}")
    block = np.empty(min(size, n), dtype=np.int64)
    overlap = np.zeros(min(size, n))
    cdef int64_t[::1] members = block
    cdef double[::1] sums = overlap
    with nogil:
        for a in range(n):
            if taken == size:
                break
            j = order[a]
            links = 0.0
            fits = True
            for m in range(taken):
                links = links + abs_corr[j, members[m]]
                if sums[m] + abs_corr[j, members[m]] >= max_overlap:
                    fits = False
            if taken and (not fits or links >= max_overlap):
                continue
            for m in range(taken):
                sums[m] += abs_corr[j, members[m]]
            sums[taken] = links
            members[taken] = j
            taken += 1
    return block[:taken].copy()
