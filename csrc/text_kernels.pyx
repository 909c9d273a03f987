# cython: language_level=3
"""Word counting over text in C++: the default token rule of word count, without a regex.

The rule is that of the regular expression ``[a-z]+(?:'[a-z]+)*`` applied to each line after
``str.lower()``: a word is a run of ASCII letters, runs joined by single inner apostrophes.
Besides A-Z, exactly two characters lower-case to ASCII letters: U+212A (Kelvin sign, to
``k``) and U+0130 (I with dot above, to ``i`` and a combining dot, which ends the word).
"""
import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.utility cimport pair


cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyUnicode_KIND(object)
    void *PyUnicode_DATA(object)


cdef inline uint32_t _letter(uint32_t c, bint lowercase) noexcept nogil:
    """The ASCII lower-case letter ``c`` stands for (0: none); U+0130 gives 'i' | 0x100."""
    if 97 <= c <= 122:
        return c
    if lowercase:
        if 65 <= c <= 90:
            return c + 32
        if c == 0x212A:
            return 107
        if c == 0x130:
            return 105 | 0x100  # 'i', then the word ends
    return 0


ctypedef fused char_t:
    uint8_t
    uint16_t
    uint32_t


cdef void _count(const char_t *text, Py_ssize_t n, bint lowercase,
                 unordered_map[string, int64_t] &counts) noexcept nogil:
    """Add the words of ``text[:n]`` (one line's code points) to ``counts``."""
    cdef Py_ssize_t i = 0
    cdef uint32_t c
    cdef string word
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
        counts[word] += 1


def count_default_words(list lines, bint lowercase=True):
    """(words, counts): the distinct words of ``lines`` by the default rule (module doc; with
    ``lowercase`` false only a-z are letters) and how often each occurs (int64 array)."""
    cdef unordered_map[string, int64_t] counts
    cdef pair[string, int64_t] item
    cdef str line
    cdef Py_ssize_t n
    cdef int kind
    cdef void *data
    counts.reserve(1 << 16)
    for line in lines:
        n, kind, data = PyUnicode_GET_LENGTH(line), PyUnicode_KIND(line), PyUnicode_DATA(line)
        if kind == 1:
            _count(<const uint8_t *>data, n, lowercase, counts)
        elif kind == 2:
            _count(<const uint16_t *>data, n, lowercase, counts)
        else:
            _count(<const uint32_t *>data, n, lowercase, counts)
    words = []
    out = np.empty(counts.size(), dtype=np.int64)
    cdef int64_t[::1] view = out
    cdef Py_ssize_t j = 0
    for item in counts:
        words.append(item.first.decode("ascii"))
        view[j] = item.second
        j += 1
    return words, out
