# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The server's key index: key -> slot, for int64 keys and UTF-8 string keys, over whole batches;
and the packing of str keys into (UTF-8 blob, offsets) and back.

Each namespace is an open-addressing hash table with linear probing and backward-shift deletion
(no node per key, no tombstones), grown by doubling past a load of 5/8. Int keys are (key, slot)
entries; str keys are (hash, slot, offset, length) entries over one byte arena that holds their
bytes, compacted whenever the table is rebuilt. Batch calls run without the GIL and prefetch the
entry of a key some places ahead, so a lookup in a table larger than the caches costs about one
memory latency spread over the batch rather than one per key. Tables of 2 MB or more lie on
transparent huge pages where the kernel grants them: a new table is written all over at once
(cleared, then filled by the rehash), and one page fault per 2 MB costs far less than 512.

The tables hash with their own functions, independent of the ring's (csrc/hashing.pyx): a
server's keys all come from one arc of the ring, which must not crowd one part of its table.
Slots are int64 >= 0; -1 marks a free entry and, in answers, an absent key.
"""
import numpy as np
cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

cnp.import_array()

cdef extern from *:
    """
    static inline uint64_t keyindex_mum(uint64_t a, uint64_t b) {
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }
    #define keyindex_prefetch(p) __builtin_prefetch((const void*)(p))
    #include <sys/mman.h>
    static void* keyindex_alloc_huge(size_t nbytes) {
        void* p = NULL;
        if (nbytes < (2u << 20)) return malloc(nbytes);
        if (posix_memalign(&p, 2u << 20, nbytes)) return NULL;
        madvise(p, nbytes, MADV_HUGEPAGE);
        return p;
    }
    """
    uint64_t mum "keyindex_mum"(uint64_t a, uint64_t b) noexcept nogil
    void prefetch "keyindex_prefetch"(const void* p) noexcept nogil
    void* alloc_huge "keyindex_alloc_huge"(size_t nbytes) noexcept nogil

cdef enum:
    AHEAD = 32  # how many keys ahead a batch loop prefetches
cdef int64_t EMPTY = -1
cdef Py_ssize_t MIN_CAPACITY = 16
cdef uint64_t P0 = 0xA0761D6478BD642FULL
cdef uint64_t P1 = 0xE7037ED1A0B428DBULL
cdef uint64_t P2 = 0x8EBC6AF09C88C6E3ULL
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t hash_int(int64_t key) noexcept nogil:
    """splitmix64: one step of its sequence, then its finaliser."""
    cdef uint64_t x = <uint64_t>key + GOLDEN
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline uint64_t load64(const char* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint64_t load32(const char* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t hash_str(const char* p, int64_t n) noexcept nogil:
    """A wyhash-style hash: 64x64->128-bit multiplies folded, 16 bytes a round, no byte loop."""
    cdef uint64_t h = mum(<uint64_t>n ^ P0, P1), a, b
    cdef const uint8_t* u
    while n > 16:
        h = mum(load64(p) ^ P1, load64(p + 8) ^ h)
        p += 16
        n -= 16
    if n > 8:
        a, b = load64(p), load64(p + n - 8)
    elif n >= 4:
        a, b = load32(p), load32(p + n - 4)
    elif n > 0:
        u = <const uint8_t*>p
        a, b = (<uint64_t>u[0] << 16) | (<uint64_t>u[n >> 1] << 8) | u[n - 1], 0
    else:
        a = b = 0
    return mum(mum(a ^ P1, b ^ h) ^ P2, h ^ P0)


cdef inline Py_ssize_t capacity_for(Py_ssize_t count) noexcept nogil:
    """The smallest power-of-two capacity that holds ``count`` keys at a load of at most 5/8."""
    cdef Py_ssize_t cap = MIN_CAPACITY
    while cap * 5 < count * 8:
        cap *= 2
    return cap


cdef inline const char* blob_base(const uint8_t[::1] blob) noexcept nogil:
    return <const char*>&blob[0] if blob.shape[0] else <const char*>""


cdef void* alloc_empty(Py_ssize_t nbytes) except NULL:
    """``nbytes`` of entries, every one free (all bits set: slot -1)."""
    cdef void* p = alloc_huge(nbytes)
    if p == NULL:
        raise MemoryError()
    memset(p, 0xFF, nbytes)
    return p


cdef struct IntEntry:
    int64_t key
    int64_t slot


cdef struct StrEntry:
    uint64_t hash
    int64_t slot
    int64_t offset  # of the key's bytes in the arena
    int64_t length


cdef inline uint64_t int_find(const IntEntry* table, uint64_t mask, int64_t key) noexcept nogil:
    """The entry holding ``key``, or the free entry where it would go."""
    cdef uint64_t pos = hash_int(key) & mask
    while table[pos].slot != EMPTY and table[pos].key != key:
        pos = (pos + 1) & mask
    return pos


cdef inline uint64_t str_find(const StrEntry* table, uint64_t mask, const char* arena,
                              const char* key, int64_t n, uint64_t h) noexcept nogil:
    """The entry holding ``key`` (of hash ``h``), or the free entry where it would go."""
    cdef uint64_t pos = h & mask
    while table[pos].slot != EMPTY and not (
            table[pos].hash == h and table[pos].length == n and memcmp(arena + table[pos].offset, key, n) == 0):
        pos = (pos + 1) & mask
    return pos


cdef inline bint stays(uint64_t home, uint64_t pos, uint64_t hole, uint64_t mask) noexcept nogil:
    """Backward-shift deletion: whether the entry at ``pos`` (whose hash puts it at ``home``)
    must stay rather than fill the ``hole`` before it in its run (the hole is not between its
    home and it)."""
    return ((pos - home) & mask) < ((pos - hole) & mask)


cdef inline void prefetch_probe(const void* table, uint64_t pos, uint64_t mask, size_t entry) noexcept nogil:
    """Start loading what a probe from entry ``pos`` reads first: its cache line and the next (a
    probe for an absent key goes on to the first free entry)."""
    prefetch(<const char*>table + pos * entry)
    prefetch(<const char*>table + ((pos + 64 // entry) & mask) * entry)


cdef class IntTable:
    """int64 key -> slot."""
    cdef IntEntry* table
    cdef uint64_t mask
    cdef Py_ssize_t count

    def __cinit__(self):
        self.table = <IntEntry*>alloc_empty(MIN_CAPACITY * sizeof(IntEntry))
        self.mask = MIN_CAPACITY - 1

    def __dealloc__(self):
        free(self.table)

    cdef inline Py_ssize_t capacity(self) noexcept nogil:
        return <Py_ssize_t>self.mask + 1

    cdef int reserve(self, Py_ssize_t count) except -1:
        """Room for ``count`` keys without growing (rebuilds the table at a larger capacity)."""
        cdef Py_ssize_t cap = capacity_for(count), old_cap = self.capacity(), i
        if cap <= old_cap:
            return 0
        cdef IntEntry* old = self.table
        cdef IntEntry* table = <IntEntry*>alloc_empty(cap * sizeof(IntEntry))
        cdef uint64_t mask = cap - 1
        with nogil:
            for i in range(old_cap):
                if old[i].slot != EMPTY:
                    table[int_find(table, mask, old[i].key)] = old[i]
        free(old)
        self.table, self.mask = table, mask
        return 0

    cdef void get(self, const int64_t* keys, int64_t* out, Py_ssize_t n) noexcept nogil:
        cdef IntEntry* table = self.table
        cdef uint64_t mask = self.mask
        cdef Py_ssize_t i
        for i in range(n):
            if i + AHEAD < n:
                prefetch_probe(table, hash_int(keys[i + AHEAD]) & mask, mask, sizeof(IntEntry))
            out[i] = table[int_find(table, mask, keys[i])].slot

    cdef Py_ssize_t set(self, const int64_t* keys, const int64_t* slots, Py_ssize_t n) noexcept nogil:
        """Returns how many keys were new. Requires room for ``n`` more keys (``reserve``)."""
        cdef IntEntry* table = self.table
        cdef uint64_t mask = self.mask, pos
        cdef Py_ssize_t i, added = 0
        for i in range(n):
            if i + AHEAD < n:
                prefetch_probe(table, hash_int(keys[i + AHEAD]) & mask, mask, sizeof(IntEntry))
            pos = int_find(table, mask, keys[i])
            if table[pos].slot == EMPTY:
                table[pos].key = keys[i]
                added += 1
            table[pos].slot = slots[i]
        self.count += added
        return added

    cdef void remove(self, const int64_t* keys, Py_ssize_t n) noexcept nogil:
        cdef IntEntry* table = self.table
        cdef uint64_t mask = self.mask, hole, pos
        cdef Py_ssize_t i
        for i in range(n):
            if i + AHEAD < n:
                prefetch_probe(table, hash_int(keys[i + AHEAD]) & mask, mask, sizeof(IntEntry))
            hole = int_find(table, mask, keys[i])
            if table[hole].slot == EMPTY:
                continue
            self.count -= 1
            pos = (hole + 1) & mask
            while table[pos].slot != EMPTY:
                if not stays(hash_int(table[pos].key) & mask, pos, hole, mask):
                    table[hole] = table[pos]
                    hole = pos
                pos = (pos + 1) & mask
            table[hole].slot = EMPTY


cdef class StrTable:
    """UTF-8 byte string -> slot; the keys' bytes live in one arena."""
    cdef StrEntry* table
    cdef uint64_t mask
    cdef Py_ssize_t count
    cdef char* arena
    cdef int64_t used, room, dead  # arena bytes: written, allocated, of deleted keys

    def __cinit__(self):
        self.table = <StrEntry*>alloc_empty(MIN_CAPACITY * sizeof(StrEntry))
        self.mask = MIN_CAPACITY - 1
        self.arena = <char*>malloc(MIN_CAPACITY)
        if self.arena == NULL:
            raise MemoryError()
        self.room = MIN_CAPACITY

    def __dealloc__(self):
        free(self.table)
        free(self.arena)

    cdef inline Py_ssize_t capacity(self) noexcept nogil:
        return <Py_ssize_t>self.mask + 1

    cdef int reserve(self, Py_ssize_t count, int64_t nbytes) except -1:
        """Room for ``count`` keys and ``nbytes`` more key bytes without growing."""
        cdef int64_t room
        cdef char* grown
        if capacity_for(count) > self.capacity():
            self.rebuild(capacity_for(count), nbytes)
        elif self.used + nbytes > self.room:
            room = max(2 * self.room, self.used + nbytes)
            grown = <char*>realloc(self.arena, room)
            if grown == NULL:
                raise MemoryError()
            self.arena, self.room = grown, room
        return 0

    cdef int rebuild(self, Py_ssize_t cap, int64_t nbytes) except -1:
        """Rehash into ``cap`` entries and a compacted arena with room for ``nbytes`` more."""
        cdef int64_t live = self.used - self.dead, used = 0
        cdef int64_t room = max(2 * live, live + nbytes, MIN_CAPACITY)
        cdef char* arena = <char*>malloc(room)
        if arena == NULL:
            raise MemoryError()
        cdef StrEntry* table
        try:
            table = <StrEntry*>alloc_empty(cap * sizeof(StrEntry))
        except MemoryError:
            free(arena)
            raise
        cdef StrEntry* old = self.table
        cdef Py_ssize_t i, old_cap = self.capacity()
        cdef uint64_t mask = cap - 1, pos
        with nogil:
            for i in range(old_cap):
                if old[i].slot == EMPTY:
                    continue
                pos = old[i].hash & mask
                while table[pos].slot != EMPTY:
                    pos = (pos + 1) & mask
                table[pos] = old[i]
                table[pos].offset = used
                memcpy(arena + used, self.arena + old[i].offset, old[i].length)
                used += old[i].length
        free(old)
        free(self.arena)
        self.table, self.mask = table, mask
        self.arena, self.used, self.room, self.dead = arena, used, room, 0
        return 0

    cdef void get(self, const char* base, const int64_t* offsets, const uint64_t* hashes, int64_t* out,
                  Py_ssize_t n) noexcept nogil:
        """``hashes``: of the keys (``hash_strs``)."""
        cdef StrEntry* table = self.table
        cdef uint64_t mask = self.mask
        cdef const char* arena = self.arena
        cdef Py_ssize_t i
        for i in range(n):
            if i + AHEAD < n:
                prefetch_probe(table, hashes[i + AHEAD] & mask, mask, sizeof(StrEntry))
            out[i] = table[str_find(table, mask, arena, base + offsets[i], offsets[i + 1] - offsets[i], hashes[i])].slot

    cdef Py_ssize_t set(self, const char* base, const int64_t* offsets, const uint64_t* hashes, const int64_t* slots,
                        Py_ssize_t n) noexcept nogil:
        """Returns how many keys were new. Requires room for ``n`` more keys and their bytes
        (``reserve``)."""
        cdef StrEntry* table = self.table
        cdef uint64_t mask = self.mask, pos
        cdef char* arena = self.arena
        cdef int64_t length, used = self.used
        cdef Py_ssize_t i, added = 0
        for i in range(n):
            if i + AHEAD < n:
                prefetch_probe(table, hashes[i + AHEAD] & mask, mask, sizeof(StrEntry))
            length = offsets[i + 1] - offsets[i]
            pos = str_find(table, mask, arena, base + offsets[i], length, hashes[i])
            if table[pos].slot == EMPTY:
                table[pos].hash, table[pos].offset, table[pos].length = hashes[i], used, length
                memcpy(arena + used, base + offsets[i], length)
                used += length
                added += 1
            table[pos].slot = slots[i]
        self.used = used
        self.count += added
        return added

    cdef void remove(self, const char* base, const int64_t* offsets, const uint64_t* hashes,
                     Py_ssize_t n) noexcept nogil:
        cdef StrEntry* table = self.table
        cdef uint64_t mask = self.mask, hole, pos
        cdef Py_ssize_t i
        for i in range(n):
            if i + AHEAD < n:
                prefetch_probe(table, hashes[i + AHEAD] & mask, mask, sizeof(StrEntry))
            hole = str_find(table, mask, self.arena, base + offsets[i], offsets[i + 1] - offsets[i], hashes[i])
            if table[hole].slot == EMPTY:
                continue
            self.count -= 1
            self.dead += table[hole].length
            pos = (hole + 1) & mask
            while table[pos].slot != EMPTY:
                if not stays(table[pos].hash & mask, pos, hole, mask):
                    table[hole] = table[pos]
                    hole = pos
                pos = (pos + 1) & mask
            table[hole].slot = EMPTY


cdef uint64_t* hash_strs(const char* base, const int64_t* offsets, Py_ssize_t n) except NULL:
    """A new array (``free`` it) of the hashes of the n keys base[offsets[i]:offsets[i+1]]."""
    cdef uint64_t* hashes = <uint64_t*>malloc(max(n, 1) * sizeof(uint64_t))
    cdef Py_ssize_t i
    if hashes == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            hashes[i] = hash_str(base + offsets[i], offsets[i + 1] - offsets[i])
    return hashes


cdef class KeyIndex:
    """Maps int keys and str keys (two separate namespaces) to int64 slots (>= 0)."""
    cdef IntTable ints
    cdef StrTable strs

    def __cinit__(self):
        self.ints = IntTable()
        self.strs = StrTable()

    def __len__(self):
        return self.ints.count + self.strs.count

    def get_ints(self, const int64_t[::1] keys):
        """Slot of each key, -1 where absent."""
        out = np.empty(keys.shape[0], dtype=np.int64)
        cdef int64_t[::1] o = out
        if keys.shape[0]:
            with nogil:
                self.ints.get(&keys[0], &o[0], keys.shape[0])
        return out

    def get_strs(self, const uint8_t[::1] blob, const int64_t[::1] offsets):
        """Slot of each key (blob[offsets[i]:offsets[i+1]]), -1 where absent."""
        cdef Py_ssize_t n = offsets.shape[0] - 1
        out = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef const char* base = blob_base(blob)
        cdef uint64_t* hashes
        if n > 0:
            hashes = hash_strs(base, &offsets[0], n)
            with nogil:
                self.strs.get(base, &offsets[0], hashes, &o[0], n)
            free(hashes)
        return out

    def set_ints(self, const int64_t[::1] keys, const int64_t[::1] slots):
        """Map each key to its slot (the last wins where a key repeats); returns how many keys
        were new (absent before, counted once). Grows the table up front as if all were."""
        cdef Py_ssize_t n = keys.shape[0], added = 0
        check_slots(slots, n)
        if n:
            self.ints.reserve(self.ints.count + n)
            with nogil:
                added = self.ints.set(&keys[0], &slots[0], n)
        return added

    def set_strs(self, const uint8_t[::1] blob, const int64_t[::1] offsets, const int64_t[::1] slots):
        """Map each key to its slot (the last wins where a key repeats); returns how many keys
        were new (absent before, counted once). Grows the table up front as if all were."""
        cdef Py_ssize_t n = offsets.shape[0] - 1, added = 0
        cdef const char* base = blob_base(blob)
        cdef uint64_t* hashes
        check_slots(slots, n)
        if n > 0:
            self.strs.reserve(self.strs.count + n, offsets[n] - offsets[0])
            hashes = hash_strs(base, &offsets[0], n)
            with nogil:
                added = self.strs.set(base, &offsets[0], hashes, &slots[0], n)
            free(hashes)
        return added

    def del_ints(self, const int64_t[::1] keys):
        """Forget the keys (absent ones are ignored)."""
        if keys.shape[0]:
            with nogil:
                self.ints.remove(&keys[0], keys.shape[0])

    def del_strs(self, const uint8_t[::1] blob, const int64_t[::1] offsets):
        """Forget the keys (absent ones are ignored)."""
        cdef Py_ssize_t n = offsets.shape[0] - 1
        cdef const char* base = blob_base(blob)
        cdef uint64_t* hashes
        if n > 0:
            hashes = hash_strs(base, &offsets[0], n)
            with nogil:
                self.strs.remove(base, &offsets[0], hashes, n)
            free(hashes)
            if self.strs.dead > max(self.strs.used // 2, <int64_t>sizeof(StrEntry) * self.strs.capacity()):
                # the arena holds more deleted bytes than live ones or than the table's size,
                # which a rebuild costs: compact it
                self.strs.rebuild(self.strs.capacity(), 0)

    def int_items(self):
        """(keys, slots) int64 arrays of every int key, in no particular order."""
        cdef Py_ssize_t i, j = 0
        keys = np.empty(self.ints.count, dtype=np.int64)
        slots = np.empty(self.ints.count, dtype=np.int64)
        cdef int64_t[::1] k = keys
        cdef int64_t[::1] s = slots
        cdef IntEntry* table = self.ints.table
        with nogil:
            for i in range(self.ints.capacity()):
                if table[i].slot != EMPTY:
                    k[j], s[j] = table[i].key, table[i].slot
                    j += 1
        return keys, slots

    def str_items(self, bytes prefix not None=b""):
        """(blob uint8, offsets int64, slots int64) of every str key starting with ``prefix``, in
        no particular order: key i is blob[offsets[i]:offsets[i+1]], UTF-8."""
        cdef const char* p = PyBytes_AS_STRING(prefix)
        cdef int64_t plen = PyBytes_GET_SIZE(prefix), total = 0
        cdef Py_ssize_t i, j = 0, n = 0, cap = self.strs.capacity()
        cdef StrEntry* table = self.strs.table
        cdef char* arena = self.strs.arena
        with nogil:
            for i in range(cap):
                if table[i].slot != EMPTY and table[i].length >= plen and memcmp(arena + table[i].offset, p, plen) == 0:
                    n += 1
                    total += table[i].length
        blob = np.empty(total, dtype=np.uint8)
        offsets = np.empty(n + 1, dtype=np.int64)
        slots = np.empty(n, dtype=np.int64)
        cdef char* b = <char*>cnp.PyArray_DATA(blob)
        cdef int64_t[::1] o = offsets
        cdef int64_t[::1] s = slots
        with nogil:
            o[0] = 0
            for i in range(cap):
                if table[i].slot != EMPTY and table[i].length >= plen and memcmp(arena + table[i].offset, p, plen) == 0:
                    memcpy(b + o[j], arena + table[i].offset, table[i].length)
                    o[j + 1] = o[j] + table[i].length
                    s[j] = table[i].slot
                    j += 1
        return blob, offsets, slots


cdef int check_slots(const int64_t[::1] slots, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    if slots.shape[0] != n:
        raise ValueError(f"{n} keys but {slots.shape[0]} slots")
    for i in range(n):
        if slots[i] < 0:
            raise ValueError(f"slot {slots[i]} < 0")
    return 0


def gather_bytes(const uint8_t[::1] blob, const int64_t[::1] offsets, const int64_t[::1] index):
    """Pack the byte strings at ``index`` (in that order) into a new (blob, offsets) pair."""
    cdef Py_ssize_t i, n = index.shape[0]
    cdef int64_t total = 0, a
    new_offsets = np.empty(n + 1, dtype=np.int64)
    cdef int64_t[::1] no = new_offsets
    for i in range(n):
        total += offsets[index[i] + 1] - offsets[index[i]]
    new_blob = np.empty(total, dtype=np.uint8)
    cdef char* nb = <char*>cnp.PyArray_DATA(new_blob)
    cdef const char* base = blob_base(blob)
    with nogil:
        no[0] = 0
        for i in range(n):
            a = offsets[index[i]]
            no[i + 1] = no[i] + offsets[index[i] + 1] - a
            memcpy(nb + no[i], base + a, no[i + 1] - no[i])
    return new_blob, new_offsets


def encode_strs(list keys):
    """(blob uint8, offsets int64) of the UTF-8 encodings of ``keys`` (a list of str): key i is
    blob[offsets[i]:offsets[i+1]]. Raises ``UnicodeEncodeError`` for a str that has none (a
    lone surrogate)."""
    cdef Py_ssize_t i, n = len(keys), size
    cdef const char* data
    offsets = np.empty(n + 1, dtype=np.int64)
    cdef int64_t[::1] o = offsets
    o[0] = 0
    for i in range(n):
        PyUnicode_AsUTF8AndSize(keys[i], &size)
        o[i + 1] = o[i] + size
    blob = np.empty(o[n], dtype=np.uint8)
    cdef char* b = <char*>cnp.PyArray_DATA(blob)
    for i in range(n):  # the UTF-8 form is cached in (or is) each str now: no second encoding
        data = PyUnicode_AsUTF8AndSize(keys[i], &size)
        memcpy(b + o[i], data, size)
    return blob, offsets


def decode_strs(const uint8_t[::1] blob, const int64_t[::1] offsets):
    """The list of str decoded from the UTF-8 byte strings blob[offsets[i]:offsets[i+1]].
    Raises ``UnicodeDecodeError`` for bytes that are not UTF-8."""
    cdef Py_ssize_t i, n = max(offsets.shape[0] - 1, 0)
    cdef const char* base = blob_base(blob)
    cdef list out = PyList_New(n)
    for i in range(n):
        s = PyUnicode_DecodeUTF8(base + offsets[i], offsets[i + 1] - offsets[i], "strict")
        Py_INCREF(s)
        PyList_SET_ITEM(out, i, s)
    return out
