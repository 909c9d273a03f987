# cython: language_level=3
"""LDA's collapsed Gibbs samplers over whole token arrays (nogil), with their own generator.

Tokens are given as parallel int32 arrays: ``doc`` (local document row) and ``word`` (local
word row); counts are int32 matrices. The generator is splitmix64, seeded per call, so a run
is reproducible for a given seed.
"""
import numpy as np

from libc.math cimport log
from libc.stdint cimport uint64_t


cdef inline uint64_t _next(uint64_t *state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double _uniform(uint64_t *state) noexcept nogil:
    return (_next(state) >> 11) * (1.0 / 9007199254740992.0)


cdef inline int _draw(double[::1] cumulative, Py_ssize_t K, uint64_t *state) noexcept nogil:
    """A topic drawn in proportion to the weights whose running sums are ``cumulative``."""
    cdef double u = _uniform(state) * cumulative[K - 1]
    cdef int t = 0
    while t < K - 1 and cumulative[t] <= u:
        t += 1
    return t


def gibbs_sweep(const int[:] doc, const int[:] word, int[:] z, int[:, :] n_dk, int[:, :] n_wk,
                int[:] n_k, double alpha, double beta, double wbeta, uint64_t seed):
    """One collapsed-Gibbs sweep over every token, in order: remove the token's topic from the
    counts, draw a new one with p(k) ~ (n_dk + alpha)(n_wk + beta)/(n_k + W beta), add it back.
    ``n_wk`` (words x K) and ``n_k`` (K) are this worker's copies of the global counts (a
    count that another worker's stale update made negative counts as 0)."""
    cdef Py_ssize_t n = doc.shape[0], K = n_k.shape[0], i, k
    cdef int d, w, t
    cdef double total, cw
    cdef uint64_t state = seed
    cdef double[::1] p = np.empty(K)
    cdef double[::1] inv = np.empty(K)  # 1 / (n_k + W beta), kept up to date per token
    with nogil:
        for k in range(K):
            inv[k] = 1.0 / ((n_k[k] if n_k[k] > 0 else 0) + wbeta)
        for i in range(n):
            d, w, t = doc[i], word[i], z[i]
            n_dk[d, t] -= 1
            n_wk[w, t] -= 1
            n_k[t] -= 1
            inv[t] = 1.0 / ((n_k[t] if n_k[t] > 0 else 0) + wbeta)
            total = 0.0
            for k in range(K):
                cw = n_wk[w, k] if n_wk[w, k] > 0 else 0
                total += (n_dk[d, k] + alpha) * (cw + beta) * inv[k]
                p[k] = total
            t = _draw(p, K, &state)
            z[i] = t
            n_dk[d, t] += 1
            n_wk[w, t] += 1
            n_k[t] += 1
            inv[t] = 1.0 / ((n_k[t] if n_k[t] > 0 else 0) + wbeta)


def infer_theta(const int[:] doc, const int[:] word, const double[:, :] phi, Py_ssize_t n_docs,
                double alpha, int sweeps, int burn_in, uint64_t seed):
    """Topic mixtures (n_docs x K) of documents given fixed topics ``phi`` (words x K, each
    column a distribution over words): Gibbs over the tokens' topics for ``sweeps`` sweeps,
    averaging (n_dk + alpha) / (n_d + K alpha) over the sweeps after ``burn_in``."""
    cdef Py_ssize_t n = doc.shape[0], K = phi.shape[1], i, k, s
    cdef int d, w, t
    cdef double total
    cdef uint64_t state = seed
    cdef double[::1] p = np.empty(K)
    cdef int[::1] z = np.empty(n, dtype=np.int32)
    cdef int[:, ::1] n_dk = np.zeros((n_docs, K), dtype=np.int32)
    cdef int[::1] n_d = np.zeros(n_docs, dtype=np.int32)
    cdef double[:, ::1] theta = np.zeros((n_docs, K))
    cdef int kept = 0
    with nogil:
        for i in range(n):
            t = <int>(_uniform(&state) * K)
            z[i] = t
            n_dk[doc[i], t] += 1
            n_d[doc[i]] += 1
        for s in range(sweeps):
            for i in range(n):
                d, w, t = doc[i], word[i], z[i]
                n_dk[d, t] -= 1
                total = 0.0
                for k in range(K):
                    total += (n_dk[d, k] + alpha) * phi[w, k]
                    p[k] = total
                t = _draw(p, K, &state)
                z[i] = t
                n_dk[d, t] += 1
            if s >= burn_in:
                kept += 1
                for d in range(n_docs):
                    for k in range(K):
                        theta[d, k] += (n_dk[d, k] + alpha) / (n_d[d] + K * alpha)
    out = np.asarray(theta)
    return out / max(kept, 1)


def token_loglik(const int[:] doc, const int[:] word, const double[:, :] theta, const double[:, :] phi):
    """Sum over tokens of log sum_k theta[doc, k] phi[word, k] (theta: docs x K, phi: words x K)."""
    cdef Py_ssize_t n = doc.shape[0], K = theta.shape[1], i, k
    cdef double total = 0.0, p
    with nogil:
        for i in range(n):
            p = 0.0
            for k in range(K):
                p += theta[doc[i], k] * phi[word[i], k]
            total += log(p)
    return total
