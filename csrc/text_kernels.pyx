# cython: language_level=3
"""Word counting over text in C++: the default token rule of word count, without a regex.

The rule is that of the regular expression ``[a-z]+(?:'[a-z]+)*`` applied to each line after
``str.lower()``: a word is a run of ASCII letters, runs joined by single inner apostrophes.
Besides A-Z, exactly two characters lower-case to ASCII letters: U+212A (Kelvin sign, to
``k``) and U+0130 (I with dot above, to ``i`` and a combining dot, which ends the word).

Words are counted in an open-addressing table (linear probing on a 64-bit hash, the words'
bytes in one arena): no allocation per word, one probe in the common case.
"""
import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libcpp.string cimport string
from libcpp.vector cimport vector


cdef extern from *:
    """
    #include <cstring>
    #include <string>
    #include <vector>

    // Counts of byte strings in order of first sight; an open-addressing index (linear
    // probing, grown at half full) holds each word's entry number + 1 (0: empty).
    struct WordCounts {
        struct Entry { uint64_t hash; uint32_t offset; uint32_t length; int64_t count; };
        std::vector<Entry> entries;
        std::vector<uint32_t> index;
        std::string arena;

        WordCounts() : index(1 << 16) {}

        static uint64_t hash_of(const char *p, size_t n) {
            uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
            for (size_t i = 0; i < n; ++i) h = (h ^ (uint8_t)p[i]) * 0x100000001B3ull;
            h ^= h >> 29; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 32;
            return h;
        }

        void add(const char *p, size_t n) {
            uint64_t h = hash_of(p, n);
            size_t mask = index.size() - 1, i = h & mask;
            for (uint32_t e; (e = index[i]); i = (i + 1) & mask) {
                Entry &s = entries[e - 1];
                if (s.hash == h && s.length == n && std::memcmp(arena.data() + s.offset, p, n) == 0) {
                    ++s.count;
                    return;
                }
            }
            entries.push_back(Entry{h, (uint32_t)arena.size(), (uint32_t)n, 1});
            index[i] = (uint32_t)entries.size();
            arena.append(p, n);
            if (2 * entries.size() > index.size()) grow();
        }

        void grow() {
            std::vector<uint32_t>(2 * index.size()).swap(index);
            size_t mask = index.size() - 1;
            for (size_t e = 0; e < entries.size(); ++e) {
                size_t i = entries[e].hash & mask;
                while (index[i]) i = (i + 1) & mask;
                index[i] = (uint32_t)(e + 1);
            }
        }
    };
    """
    cppclass WordCounts:
        cppclass Entry:
            uint32_t offset
            uint32_t length
            int64_t count
        vector[Entry] entries
        string arena
        void add(const char *p, size_t n) nogil


cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyUnicode_KIND(object)
    void *PyUnicode_DATA(object)
    object PyUnicode_DecodeASCII(const char *s, Py_ssize_t size, const char *errors)


cdef uint8_t LETTERS[2][256]  # [lowercase][c]: the ASCII lower-case letter c stands for, or 0
for _c in range(256):
    LETTERS[0][_c] = _c if 97 <= _c <= 122 else 0
    LETTERS[1][_c] = _c if 97 <= _c <= 122 else _c + 32 if 65 <= _c <= 90 else 0


cdef inline uint32_t _letter(uint32_t c, bint lowercase) noexcept nogil:
    """The ASCII lower-case letter ``c`` stands for (0: none); U+0130 gives 'i' | 0x100."""
    if c < 256:
        return LETTERS[lowercase][c]
    if lowercase:
        if c == 0x212A:
            return 107
        if c == 0x130:
            return 105 | 0x100  # 'i', then the word ends
    return 0


ctypedef fused char_t:
    uint8_t
    uint16_t
    uint32_t


cdef void _count(const char_t *text, Py_ssize_t n, bint lowercase, WordCounts &counts,
                 string &word) noexcept nogil:
    """Add the words of ``text[:n]`` (code points) to ``counts``; ``word`` is scratch space."""
    cdef Py_ssize_t i = 0
    cdef uint32_t c
    cdef bint ends
    while i < n:
        c = _letter(text[i], lowercase)
        if c == 0:
            i += 1
            continue
        word.clear()
        while True:  # a run of letters
            ends = c > 0xFF
            word.push_back(<char>(c & 0xFF))
            i += 1
            if ends or i >= n:
                break
            c = _letter(text[i], lowercase)
            if c == 0:
                # an apostrophe followed by a letter joins the next run
                if text[i] == 39 and i + 1 < n and _letter(text[i + 1], lowercase) != 0:
                    word.push_back(39)
                    i += 1
                    c = _letter(text[i], lowercase)
                else:
                    break
        counts.add(word.data(), word.size())


def count_default_words(list texts, bint lowercase=True):
    """(words, counts): the distinct words of ``texts`` (lines, or whole texts: a line break
    is no letter) by the default rule (module doc; with ``lowercase`` false only a-z are
    letters) and how often each occurs (int64 array), in order of first occurrence."""
    cdef WordCounts counts
    cdef string word
    cdef str text
    cdef Py_ssize_t n
    cdef int kind
    cdef void *data
    for text in texts:
        n, kind, data = PyUnicode_GET_LENGTH(text), PyUnicode_KIND(text), PyUnicode_DATA(text)
        with nogil:
            if kind == 1:
                _count(<const uint8_t *>data, n, lowercase, counts, word)
            elif kind == 2:
                _count(<const uint16_t *>data, n, lowercase, counts, word)
            else:
                _count(<const uint32_t *>data, n, lowercase, counts, word)
    cdef Py_ssize_t j, n_words = counts.entries.size()
    words = []
    out = np.empty(n_words, dtype=np.int64)
    cdef int64_t[::1] view = out
    cdef const char *base = counts.arena.data()
    for j in range(n_words):
        words.append(PyUnicode_DecodeASCII(base + counts.entries[j].offset, counts.entries[j].length, NULL))
        view[j] = counts.entries[j].count
    return words, out
