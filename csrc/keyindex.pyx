# cython: language_level=3, boundscheck=False, wraparound=False
"""The server's key index: key -> slot, for int64 keys and UTF-8 string keys, over whole batches.

Each batch call runs one C++ hash-map loop without the GIL; Python never touches a single key.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t
from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.utility cimport pair
from cython.operator cimport dereference as deref, preincrement as inc

cnp.import_array()


cdef inline const char* blob_base(const uint8_t[::1] blob) noexcept nogil:
    return <const char*>&blob[0] if blob.shape[0] else <const char*>""


cdef class KeyIndex:
    """Maps int keys and str keys (two separate namespaces) to int64 slots."""
    cdef unordered_map[int64_t, int64_t] ints
    cdef unordered_map[string, int64_t] strs

    def __len__(self):
        return self.ints.size() + self.strs.size()

    def get_ints(self, const int64_t[::1] keys):
        """Slot of each key, -1 where absent."""
        cdef Py_ssize_t i, n = keys.shape[0]
        out = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef unordered_map[int64_t, int64_t].iterator it
        with nogil:
            for i in range(n):
                it = self.ints.find(keys[i])
                o[i] = deref(it).second if it != self.ints.end() else -1
        return out

    def get_strs(self, const uint8_t[::1] blob, const int64_t[::1] offsets):
        """Slot of each key (blob[offsets[i]:offsets[i+1]]), -1 where absent."""
        cdef Py_ssize_t i, n = offsets.shape[0] - 1
        out = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef string key
        cdef const char* base = blob_base(blob)
        cdef unordered_map[string, int64_t].iterator it
        with nogil:
            for i in range(n):
                key.assign(base + offsets[i], offsets[i + 1] - offsets[i])
                it = self.strs.find(key)
                o[i] = deref(it).second if it != self.strs.end() else -1
        return out

    def set_ints(self, const int64_t[::1] keys, const int64_t[::1] slots):
        cdef Py_ssize_t i
        with nogil:
            for i in range(keys.shape[0]):
                self.ints[keys[i]] = slots[i]

    def set_strs(self, const uint8_t[::1] blob, const int64_t[::1] offsets, const int64_t[::1] slots):
        cdef Py_ssize_t i
        cdef const char* base = blob_base(blob)
        with nogil:
            for i in range(offsets.shape[0] - 1):
                self.strs[string(base + offsets[i], offsets[i + 1] - offsets[i])] = slots[i]

    def del_ints(self, const int64_t[::1] keys):
        cdef Py_ssize_t i
        with nogil:
            for i in range(keys.shape[0]):
                self.ints.erase(keys[i])

    def del_strs(self, const uint8_t[::1] blob, const int64_t[::1] offsets):
        cdef Py_ssize_t i
        cdef const char* base = blob_base(blob)
        with nogil:
            for i in range(offsets.shape[0] - 1):
                self.strs.erase(string(base + offsets[i], offsets[i + 1] - offsets[i]))

    def int_items(self):
        """(keys, slots) int64 arrays of every int key."""
        cdef Py_ssize_t i = 0, n = self.ints.size()
        keys = np.empty(n, dtype=np.int64)
        slots = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] k = keys
        cdef int64_t[::1] s = slots
        cdef unordered_map[int64_t, int64_t].iterator it = self.ints.begin()
        while it != self.ints.end():
            k[i] = deref(it).first
            s[i] = deref(it).second
            i += 1
            inc(it)
        return keys, slots

    def str_items(self, bytes prefix=b""):
        """(keys as a list of str, slots int64 array) of every str key starting with ``prefix``."""
        cdef list keys = []
        cdef list slots = []
        cdef string p = prefix
        cdef unordered_map[string, int64_t].iterator it = self.strs.begin()
        while it != self.strs.end():
            if deref(it).first.compare(0, p.size(), p) == 0:
                keys.append(deref(it).first.decode("utf-8"))
                slots.append(deref(it).second)
            inc(it)
        return keys, np.array(slots, dtype=np.int64)


def gather_bytes(const uint8_t[::1] blob, const int64_t[::1] offsets, const int64_t[::1] index):
    """Pack the byte strings at ``index`` (in that order) into a new (blob, offsets) pair."""
    cdef Py_ssize_t i, j, n = index.shape[0], total = 0, pos = 0, a, b
    new_offsets = np.empty(n + 1, dtype=np.int64)
    cdef int64_t[::1] no = new_offsets
    for i in range(n):
        total += offsets[index[i] + 1] - offsets[index[i]]
    new_blob = np.empty(total, dtype=np.uint8)
    cdef uint8_t[::1] nb = new_blob
    with nogil:
        no[0] = 0
        for i in range(n):
            a = offsets[index[i]]
            b = offsets[index[i] + 1]
            for j in range(a, b):
                nb[pos] = blob[j]
                pos += 1
            no[i + 1] = pos
    return new_blob, new_offsets
