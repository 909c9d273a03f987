# cython: language_level=3
"""LDA's collapsed Gibbs samplers over whole token arrays (nogil), with their own generator.

Tokens are grouped by document: ``doc_ptr`` (n_docs + 1 offsets, CSR style) delimits each
local document's run of ``word`` (local word rows); counts are int32 matrices. The generator
is splitmix64, seeded per call, so a run is reproducible for a given seed.
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


cdef inline void _drop(int[::1] topics, int *size, int t) noexcept nogil:
    """Remove topic ``t`` from the unordered list ``topics[:size]``."""
    cdef int j
    for j in range(size[0]):
        if topics[j] == t:
            size[0] -= 1
            topics[j] = topics[size[0]]
            return


def gibbs_sweep(const int[::1] doc_ptr, const int[::1] word, int[::1] z, int[:, ::1] n_dk,
                int[:, ::1] n_wk, int[::1] n_k, double alpha, double beta, double wbeta, uint64_t seed):
    """One collapsed-Gibbs sweep over every token, document by document, SparseLDA style (Yao,
    Mimno & McCallum 2009): p(k) ~ (n_dk + a)(n_wk + b)/(n_k + Wb) is split into the smoothing
    bucket s = sum_k ab/(n_k + Wb), the document bucket r = sum over the document's topics of
    n_dk b/(n_k + Wb) and the word bucket q = sum over the word's topics of
    (n_dk + a) n_wk/(n_k + Wb); only the non-zero counts of the document and of the word are
    visited. ``n_wk`` (words x K) and ``n_k`` (K) are this worker's copies of the global
    counts and must hold this worker's own tokens (no negative count).

    Returns the sum over tokens of log p(word | the other tokens' topics), the predictive
    probability the sampler computes anyway: (s + r + q) / (n_d - 1 + K a).
    Raises ``ValueError`` on a negative count."""
    cdef Py_ssize_t n_docs = doc_ptr.shape[0] - 1, W = n_wk.shape[0], K = n_k.shape[0]
    cdef Py_ssize_t i, k, j, d, w
    cdef int t, n_topics, d_size
    cdef double s, r, q, u, ab = alpha * beta, kalpha = K * alpha, loglik = 0.0
    cdef uint64_t state = seed
    cdef double[::1] inv = np.empty(K)   # 1 / (n_k + W beta)
    cdef double[::1] coef = np.empty(K)  # (n_dk + alpha) / (n_k + W beta) of the current document
    cdef double[::1] q_k = np.empty(K)
    cdef int[::1] d_topics = np.empty(K, dtype=np.int32)  # the current document's non-zero topics
    cdef int[:, ::1] w_topics = np.empty((W, K), dtype=np.int32)  # each word's non-zero topics
    cdef int[::1] w_size = np.zeros(W, dtype=np.int32)
    if (np.asarray(n_wk) < 0).any() or (np.asarray(n_k) < 0).any() or (np.asarray(n_dk) < 0).any():
        raise ValueError("gibbs_sweep: a negative topic count")
    with nogil:
        for w in range(W):
            for k in range(K):
                if n_wk[w, k] > 0:
                    w_topics[w, w_size[w]] = <int>k
                    w_size[w] += 1
        for k in range(K):
            inv[k] = 1.0 / (n_k[k] + wbeta)
        for d in range(n_docs):
            if doc_ptr[d + 1] == doc_ptr[d]:
                continue
            s, r, d_size = 0.0, 0.0, 0  # summed afresh per document: no drift
            for k in range(K):
                s += ab * inv[k]
                coef[k] = (n_dk[d, k] + alpha) * inv[k]
                if n_dk[d, k] > 0:
                    r += n_dk[d, k] * beta * inv[k]
                    d_topics[d_size] = <int>k
                    d_size += 1
            for i in range(doc_ptr[d], doc_ptr[d + 1]):
                w, t = word[i], z[i]
                # take the token out
                s -= ab * inv[t]
                r -= n_dk[d, t] * beta * inv[t]
                n_dk[d, t] -= 1
                n_wk[w, t] -= 1
                n_k[t] -= 1
                inv[t] = 1.0 / (n_k[t] + wbeta)
                s += ab * inv[t]
                r += n_dk[d, t] * beta * inv[t]
                coef[t] = (n_dk[d, t] + alpha) * inv[t]
                if n_dk[d, t] == 0:
                    _drop(d_topics, &d_size, t)
                n_topics = w_size[w]
                if n_wk[w, t] == 0:
                    _drop(w_topics[w], &n_topics, t)
                    w_size[w] = n_topics
                q = 0.0
                for j in range(n_topics):
                    k = w_topics[w, j]
                    q += coef[k] * n_wk[w, k]
                    q_k[j] = q
                loglik += log((s + r + q) / (doc_ptr[d + 1] - doc_ptr[d] - 1 + kalpha))
                # draw, usually from the word bucket
                u = _uniform(&state) * (s + r + q)
                if u < q:
                    j = 0
                    while j < n_topics - 1 and q_k[j] <= u:
                        j += 1
                    t = w_topics[w, j]
                else:
                    u -= q
                    if u < r and d_size > 0:
                        j = 0
                        while True:
                            t = d_topics[j]
                            u -= n_dk[d, t] * beta * inv[t]
                            if u < 0 or j == d_size - 1:
                                break
                            j += 1
                    else:
                        u -= r
                        t = 0
                        while t < K - 1:
                            u -= ab * inv[t]
                            if u < 0:
                                break
                            t += 1
                # put it back with its new topic
                z[i] = t
                s -= ab * inv[t]
                r -= n_dk[d, t] * beta * inv[t]
                n_dk[d, t] += 1
                n_wk[w, t] += 1
                n_k[t] += 1
                inv[t] = 1.0 / (n_k[t] + wbeta)
                s += ab * inv[t]
                r += n_dk[d, t] * beta * inv[t]
                coef[t] = (n_dk[d, t] + alpha) * inv[t]
                if n_dk[d, t] == 1:
                    d_topics[d_size] = t
                    d_size += 1
                if n_wk[w, t] == 1:
                    w_topics[w, w_size[w]] = t
                    w_size[w] += 1
    return loglik


def infer_theta(const int[::1] doc_ptr, const int[::1] word, const double[:, ::1] phi, double alpha,
                int sweeps, int burn_in, uint64_t seed):
    """Topic mixtures (n_docs x K) of documents given fixed topics ``phi`` (words x K, each
    column a distribution over words): Gibbs over the tokens' topics for ``sweeps`` sweeps,
    averaging (n_dk + alpha) / (n_d + K alpha) over the sweeps after ``burn_in``."""
    cdef Py_ssize_t n_docs = doc_ptr.shape[0] - 1, n = word.shape[0], K = phi.shape[1], i, k, s, d
    cdef int w, t
    cdef double total, u, norm
    cdef uint64_t state = seed
    cdef double[::1] p = np.empty(K)
    cdef int[::1] z = np.empty(n, dtype=np.int32)
    cdef int[:, ::1] n_dk = np.zeros((n_docs, K), dtype=np.int32)
    cdef double[:, ::1] theta = np.zeros((n_docs, K))
    cdef int kept = 0
    with nogil:
        for d in range(n_docs):
            for i in range(doc_ptr[d], doc_ptr[d + 1]):
                t = <int>(_uniform(&state) * K)
                z[i] = t
                n_dk[d, t] += 1
        for s in range(sweeps):
            for d in range(n_docs):
                for i in range(doc_ptr[d], doc_ptr[d + 1]):
                    w, t = word[i], z[i]
                    n_dk[d, t] -= 1
                    total = 0.0
                    for k in range(K):
                        total += (n_dk[d, k] + alpha) * phi[w, k]
                        p[k] = total
                    u = _uniform(&state) * total
                    t = 0
                    while t < K - 1 and p[t] <= u:
                        t += 1
                    z[i] = t
                    n_dk[d, t] += 1
                if s >= burn_in:
                    norm = 1.0 / (doc_ptr[d + 1] - doc_ptr[d] + K * alpha)
                    for k in range(K):
                        theta[d, k] += (n_dk[d, k] + alpha) * norm
            if s >= burn_in:
                kept += 1
    out = np.asarray(theta)
    return out / max(kept, 1)


def token_loglik(const int[::1] doc_ptr, const int[::1] word, const double[:, ::1] theta,
                 const double[:, ::1] phi):
    """Sum over tokens of log sum_k theta[doc, k] phi[word, k] (theta: docs x K, phi: words x K)."""
    cdef Py_ssize_t n_docs = doc_ptr.shape[0] - 1, K = theta.shape[1], i, k, d
    cdef double total = 0.0, p
    with nogil:
        for d in range(n_docs):
            for i in range(doc_ptr[d], doc_ptr[d + 1]):
                p = 0.0
                for k in range(K):
                    p += theta[d, k] * phi[word[i], k]
                total += log(p)
    return total
