# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Parsers of whole line-aligned text chunks into numpy arrays (the hot path of data loading).

Each parser walks one ``bytes`` chunk once, without Python objects per field, and reports a
malformed line by its 0-based index inside the chunk (the caller turns that into file:line).
Lines end in LF; a CR before the LF is ignored. Blank lines and, where a comment byte is given,
lines whose first non-blank byte is that byte are skipped. Numbers: integers are decimal
int64; floats go through a fast exact path for plain integers and ``strtod`` otherwise, so the
values are the correctly rounded doubles that ``float()`` would give.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport strtod
from libc.string cimport memchr, memcpy

cnp.import_array()

# Error codes, shared with paracel.loading.formats (PARSE_ERRORS) which words them.
DEF E_FIELDS = 1      # wrong number of fields
DEF E_INT = 2         # not an integer
DEF E_FLOAT = 3       # not a number
DEF E_PAIR = 4        # LIBSVM item is not idx:val
DEF E_INDEX = 5       # LIBSVM index < 1 or not an integer
DEF E_EMPTY = 6       # empty field between two delimiters


cdef inline bint is_blank(unsigned char c) noexcept nogil:
    return c == 32 or c == 9 or c == 13


cdef inline Py_ssize_t line_end(const char* s, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    cdef const void* hit = memchr(s + p, 10, n - p)
    return n if hit == NULL else <const char*>hit - s


cdef inline Py_ssize_t scan_int(const char* s, Py_ssize_t a, Py_ssize_t q,
                                const unsigned char* sep, int64_t* out) noexcept nogil:
    """Parse the decimal int64 token at s[a:]; returns the index just past it, or -1 if the
    token (up to a separator or q) is not one."""
    cdef Py_ssize_t p = a, start
    cdef bint neg = False
    cdef unsigned long long v = 0
    cdef unsigned char c
    if p < q and (s[p] == 45 or s[p] == 43):
        neg = s[p] == 45
        p += 1
    start = p
    while p < q:
        c = <unsigned char>s[p] - 48
        if c > 9:
            break
        v = v * 10 + c
        p += 1
    if p == start or p - start > 19 or (p < q and not sep[<unsigned char>s[p]]):
        return -1
    if v > 9223372036854775807ULL + (1 if neg else 0):
        return -1
    out[0] = -<int64_t>v if neg else <int64_t>v
    return p


cdef inline Py_ssize_t scan_float(const char* s, Py_ssize_t a, Py_ssize_t q, Py_ssize_t n,
                                  const unsigned char* sep, double* out) noexcept nogil:
    """Parse the number token at s[a:] as a double; returns the index just past it, or -1.
    Plain integers of <= 15 digits are exact without strtod."""
    cdef Py_ssize_t p = a, start
    cdef bint neg = False
    cdef long long v = 0
    cdef unsigned char c
    cdef char* endp
    cdef char tail[64]
    if p < q and (s[p] == 45 or s[p] == 43):
        neg = s[p] == 45
        p += 1
    start = p
    while p < q and p - start < 16:
        c = <unsigned char>s[p] - 48
        if c > 9:
            break
        v = v * 10 + c
        p += 1
    if p > start and p - start <= 15 and (p == q or sep[<unsigned char>s[p]]):
        out[0] = -<double>v if neg else <double>v
        return p
    if a >= q or is_blank(<unsigned char>s[a]):
        return -1  # strtod would skip leading blanks; a field never starts with one
    if q == n:
        # The token ends the buffer (a last line without LF): strtod needs a terminator.
        if q - a >= 64:
            return -1
        memcpy(tail, s + a, q - a)
        tail[q - a] = 0
        out[0] = strtod(tail, &endp)
        p = a + (endp - tail)
    else:
        out[0] = strtod(s + a, &endp)
        p = endp - s
    if p == a or p > q or (p < q and not sep[<unsigned char>s[p]]):
        return -1
    return p


def parse_table(const unsigned char[::1] data, bytes kinds, int n_required, bytes seps, bint collapse,
                int comment, bint skip_bad, int64_t int_fill, double float_fill):
    """Parse delimited numeric lines into int64 and float64 columns.

    ``kinds`` has one byte per column: ``i`` (int64), ``f`` (float64) or ``_`` (ignored);
    columns after the first ``n_required`` are optional and take ``int_fill``/``float_fill``
    when absent. ``seps`` are the separator bytes; with ``collapse`` a run of separators (and
    leading/trailing ones) counts as one, as for whitespace. ``comment`` is a byte value or -1.

    Returns ``(ints (n_int, n) int64, floats (n_float, n) float64, skipped, error)`` (one row
    per column, each row contiguous) where ``error`` is ``None`` or ``(line_index, code,
    field_index)`` of the first malformed line (with ``skip_bad`` such lines are dropped and
    counted, and ``error`` is the first of them).
    """
    cdef Py_ssize_t n = data.shape[0]
    cdef const char* s = NULL
    if n:
        s = <const char*>&data[0]
    cdef int ncols = len(kinds)
    cdef const char* kd = kinds
    cdef int ni = 0, nf = 0, k
    for k in range(ncols):
        if kd[k] == 105:
            ni += 1
        elif kd[k] == 102:
            nf += 1
    cdef unsigned char sepmap[256]
    for k in range(256):
        sepmap[k] = 0
    for k in range(len(seps)):
        sepmap[<unsigned char>seps[k]] = 1
    cdef Py_ssize_t m = count_byte(s, n, 10) + 1
    ints = np.empty((ni, m), dtype=np.int64)
    floats = np.empty((nf, m), dtype=np.float64)
    cdef int64_t* iv = <int64_t*>cnp.PyArray_DATA(ints)
    cdef double* fv = <double*>cnp.PyArray_DATA(floats)
    cdef Py_ssize_t p = 0, e, q, a, row = 0, line = 0, skipped = 0
    cdef int col, ii, ff, code
    cdef Py_ssize_t err_line = -1
    cdef int err_code = 0, err_col = 0
    with nogil:
        while p < n:
            e = line_end(s, p, n)
            q = e
            if q > p and s[q - 1] == 13:
                q -= 1
            a = p
            while a < q and (is_blank(<unsigned char>s[a]) or
                             (collapse and sepmap[<unsigned char>s[a]])):
                a += 1
            if a == q or (comment >= 0 and <unsigned char>s[a] == comment):
                p = e + 1
                line += 1
                continue
            if not collapse:
                a = p
            col = 0
            ii = 0
            ff = 0
            code = 0
            while True:
                if col >= ncols:
                    code = E_FIELDS
                    break
                if kd[col] == 105:
                    p = scan_int(s, a, q, sepmap, iv + ii * m + row)
                    ii += 1
                    if p < 0:
                        code = E_EMPTY if (a == q or sepmap[<unsigned char>s[a]]) else E_INT
                        break
                elif kd[col] == 102:
                    p = scan_float(s, a, q, n, sepmap, fv + ff * m + row)
                    ff += 1
                    if p < 0:
                        code = E_EMPTY if (a == q or sepmap[<unsigned char>s[a]]) else E_FLOAT
                        break
                else:
                    p = a
                    while p < q and not sepmap[<unsigned char>s[p]]:
                        p += 1
                    if p == a:
                        code = E_EMPTY
                        break
                col += 1
                if p >= q:
                    break
                p += 1
                if collapse:
                    while p < q and sepmap[<unsigned char>s[p]]:
                        p += 1
                    if p >= q:
                        break
                a = p
            if code == 0 and col < n_required:
                code = E_FIELDS
            if code:
                if err_line < 0:
                    err_line = line
                    err_code = code
                    err_col = col
                if not skip_bad:
                    break
                skipped += 1
            else:
                while col < ncols:
                    if kd[col] == 105:
                        iv[ii * m + row] = int_fill
                        ii += 1
                    elif kd[col] == 102:
                        fv[ff * m + row] = float_fill
                        ff += 1
                    col += 1
                row += 1
            p = e + 1
            line += 1
    error = None if err_line < 0 else (err_line, err_code, err_col)
    return ints[:, :row], floats[:, :row], skipped, error


cdef Py_ssize_t count_byte(const char* s, Py_ssize_t n, int byte) noexcept nogil:
    """How many times ``byte`` occurs in s[:n]."""
    cdef Py_ssize_t count = 0, p = 0
    cdef const void* hit
    while p < n:
        hit = memchr(s + p, byte, n - p)
        if hit == NULL:
            break
        count += 1
        p = <const char*>hit - s + 1
    return count


def parse_libsvm(const unsigned char[::1] data, bint skip_bad):
    """Parse LIBSVM lines ``label idx:val ...`` (1-based idx; ``#`` starts a comment).

    Returns ``(labels (n,) float64, indptr (n+1,) int64, indices (nnz,) int32 0-based,
    values (nnz,) float64, max_index (int, 0-based, -1 if none), skipped, error)``, with
    ``error`` as in :func:`parse_table` (``field_index`` is the item's position on its line).
    """
    cdef Py_ssize_t n = data.shape[0]
    cdef const char* s = NULL
    if n:
        s = <const char*>&data[0]
    cdef Py_ssize_t max_rows = count_byte(s, n, 10) + 1
    cdef Py_ssize_t max_nnz = count_byte(s, n, 58)
    labels = np.empty(max_rows, dtype=np.float64)
    indptr = np.zeros(max_rows + 1, dtype=np.int64)
    indices = np.empty(max_nnz, dtype=np.int32)
    values = np.empty(max_nnz, dtype=np.float64)
    cdef double[::1] lab = labels
    cdef int64_t[::1] ptr = indptr
    cdef int32_t[::1] idx = indices
    cdef double[::1] val = values
    cdef Py_ssize_t p = 0, e, q, a, t, row = 0, line = 0, skipped = 0, nnz = 0, row_start
    cdef int64_t ix, max_ix = -1, row_max
    cdef int code, item, k
    cdef Py_ssize_t err_line = -1
    cdef int err_code = 0, err_col = 0
    cdef unsigned char blank[256]
    cdef unsigned char blank_or_colon[256]
    for k in range(256):
        blank[k] = is_blank(<unsigned char>k)
        blank_or_colon[k] = blank[k] or k == 58
    with nogil:
        while p < n:
            e = line_end(s, p, n)
            q = e
            a = p
            while a < q and s[a] != 35:
                a += 1
            q = a  # drop a trailing comment
            while q > p and is_blank(<unsigned char>s[q - 1]):
                q -= 1
            a = p
            while a < q and is_blank(<unsigned char>s[a]):
                a += 1
            if a == q:
                p = e + 1
                line += 1
                continue
            p = scan_float(s, a, q, n, blank, &lab[row])
            code = E_FLOAT if p < 0 else 0
            row_start = nnz
            row_max = max_ix
            item = 1
            while code == 0:
                while p < q and is_blank(<unsigned char>s[p]):
                    p += 1
                if p >= q:
                    break
                a = p
                p = scan_int(s, a, q, blank_or_colon, &ix)
                if p < 0 or p == q or s[p] != 58:
                    t = a
                    while t < q and not is_blank(<unsigned char>s[t]) and s[t] != 58:
                        t += 1
                    code = E_INDEX if t < q and s[t] == 58 else E_PAIR
                    break
                if ix < 1 or ix > 2147483647:
                    code = E_INDEX
                    break
                p = scan_float(s, p + 1, q, n, blank, &val[nnz])
                if p < 0:
                    code = E_FLOAT
                    break
                idx[nnz] = <int32_t>(ix - 1)
                if ix - 1 > row_max:
                    row_max = ix - 1
                nnz += 1
                item += 1
            if code:
                if err_line < 0:
                    err_line = line
                    err_code = code
                    err_col = item
                if not skip_bad:
                    break
                nnz = row_start
                skipped += 1
            else:
                max_ix = row_max
                row += 1
                ptr[row] = nnz
            p = e + 1
            line += 1
    error = None if err_line < 0 else (err_line, err_code, err_col)
    return (labels[:row], indptr[:row + 1], indices[:nnz], values[:nnz], max_ix, skipped,
            error)
