# cython: language_level=3, boundscheck=False, wraparound=False
"""Deterministic 64-bit key hashing and consistent-hash ring routing over whole batches.

Integer keys are mixed with the splitmix64 finaliser, string keys (UTF-8 bytes) with
MurmurHash64A; a type tag keeps the int key 5 and the str key "5" apart. The results never
depend on the process (no salted ``hash()``), so every rank routes a key the same way.
"""
import numpy as np
cimport numpy as cnp
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int32_t, int64_t, uint64_t, uint8_t
from libc.string cimport memcpy

cnp.import_array()

cdef uint64_t STR_SEED = 0x9E3779B97F4A7C15ULL
cdef uint64_t INT_TAG = 0xD6E8FEB86659FD93ULL


cdef inline uint64_t mix64(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= 0x94D049BB133111EBULL
    x ^= x >> 31
    return x


cdef inline uint64_t murmur64a(const uint8_t* data, Py_ssize_t n, uint64_t seed) noexcept nogil:
    cdef uint64_t m = 0xC6A4A7935BD1E995ULL
    cdef int r = 47
    cdef uint64_t h = seed ^ (<uint64_t>n * m)
    cdef uint64_t k
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t nblocks = n // 8
    cdef const uint8_t* tail
    for i in range(nblocks):
        memcpy(&k, data + 8 * i, 8)
        k *= m
        k ^= k >> r
        k *= m
        h ^= k
        h *= m
    tail = data + 8 * nblocks
    cdef int rest = n & 7
    if rest:
        k = 0
        for i in range(rest - 1, -1, -1):
            k = (k << 8) | tail[i]
        h ^= k
        h *= m
    h ^= h >> r
    h *= m
    h ^= h >> r
    return h


def hash_int_keys(const int64_t[::1] keys):
    """Hash int64 keys; returns a uint64 array of the same length."""
    cdef Py_ssize_t i, n = keys.shape[0]
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = mix64(<uint64_t>keys[i] ^ INT_TAG)
    return out


def hash_str_keys(list keys):
    """Hash a list of str keys by their UTF-8 bytes; returns a uint64 array."""
    cdef Py_ssize_t i, n = len(keys), size
    cdef const char* data
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    for i in range(n):
        data = PyUnicode_AsUTF8AndSize(keys[i], &size)
        o[i] = murmur64a(<const uint8_t*>data, size, STR_SEED)
    return out


def hash_bytes(const uint8_t[::1] blob, const int64_t[::1] offsets):
    """Hash n byte strings packed in ``blob``, string i being blob[offsets[i]:offsets[i+1]].

    Gives the same value as ``hash_str_keys`` for the UTF-8 encoding of each string.
    """
    cdef Py_ssize_t i, n = offsets.shape[0] - 1
    out = np.empty(max(n, 0), dtype=np.uint64)
    cdef uint64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = murmur64a(&blob[0] + offsets[i] if blob.shape[0] else NULL,
                             offsets[i + 1] - offsets[i], STR_SEED)
    return out


def route(const uint64_t[::1] hashes, const uint64_t[::1] points, const int32_t[::1] owners,
          const int64_t[::1] starts):
    """Owner of each hash on a ring: the first point >= the hash, wrapping to points[0].

    ``points`` must be sorted ascending and non-empty, ``starts`` (length 2**16 + 1) the index
    of the first point at or above ``b << 48`` for every bucket ``b`` of the hashes' top 16
    bits (``ring_starts``), so each hash is searched for among its bucket's few points only.
    Returns an int32 array of owners.
    """
    cdef Py_ssize_t i, lo, hi, mid, n = hashes.shape[0], m = points.shape[0]
    cdef uint64_t h
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] o = out
    with nogil:
        for i in range(n):
            h = hashes[i]
            lo = starts[h >> 48]
            hi = starts[(h >> 48) + 1]
            while lo < hi:
                mid = (lo + hi) >> 1
                if points[mid] < h:
                    lo = mid + 1
                else:
                    hi = mid
            o[i] = owners[lo if lo < m else 0]
    return out


def ring_starts(const uint64_t[::1] points):
    """For ``route``: the index of the first of the sorted ``points`` at or above ``b << 48``,
    for every bucket ``b`` in 0 .. 2**16 (the last is ``len(points)``)."""
    cdef Py_ssize_t b, j = 0, m = points.shape[0]
    out = np.empty((1 << 16) + 1, dtype=np.int64)
    cdef int64_t[::1] o = out
    with nogil:
        for b in range(1 << 16):
            while j < m and (points[j] >> 48) < <uint64_t>b:
                j += 1
            o[b] = j
        o[1 << 16] = m
    return out
