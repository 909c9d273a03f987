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
    while p < n and s[p] != 10:
        p += 1
    return p


cdef inline int parse_int(const char* s, Py_ssize_t a, Py_ssize_t b, int64_t* out) noexcept nogil:
    """Decimal int64 in s[a:b] (optional sign); 0 on success."""
    cdef bint neg = False
    cdef unsigned long long v = 0
    cdef unsigned char c
    if a < b and (s[a] == 45 or s[a] == 43):
        neg = s[a] == 45
        a += 1
    if a >= b or b - a > 19:
        return E_INT
    while a < b:
        c = <unsigned char>s[a] - 48
        if c > 9:
            return E_INT
        v = v * 10 + c
        a += 1
    if v > 9223372036854775807ULL + (1 if neg else 0):
        return E_INT
    out[0] = -<int64_t>v if neg else <int64_t>v
    return 0


cdef inline int parse_float(const char* s, Py_ssize_t a, Py_ssize_t b, double* out) noexcept nogil:
    """Double in s[a:b]; plain integers of <= 15 digits are exact without strtod."""
    cdef Py_ssize_t i = a
    cdef bint neg = False
    cdef long long v = 0
    cdef unsigned char c
    cdef char* endp
    if a >= b:
        return E_FLOAT
    if s[i] == 45 or s[i] == 43:
        neg = s[i] == 45
        i += 1
    if i < b and b - i <= 15:
        while i < b:
            c = <unsigned char>s[i] - 48
            if c > 9:
                break
            v = v * 10 + c
            i += 1
        if i == b:
            out[0] = -<double>v if neg else <double>v
            return 0
    if is_blank(<unsigned char>s[a]):
        return E_FLOAT  # strtod would skip leading blanks; a field never starts with one
    out[0] = strtod(s + a, &endp)
    if endp != s + b:
        return E_FLOAT
    return 0


def parse_table(bytes data, bytes kinds, int n_required, bytes seps, bint collapse,
                int comment, bint skip_bad, int64_t int_fill, double float_fill):
    """Parse delimited numeric lines into an int64 and a float64 matrix.

    ``kinds`` has one byte per column: ``i`` (int64), ``f`` (float64) or ``_`` (ignored);
    columns after the first ``n_required`` are optional and take ``int_fill``/``float_fill``
    when absent. ``seps`` are the separator bytes; with ``collapse`` a run of separators (and
    leading/trailing ones) counts as one, as for whitespace. ``comment`` is a byte value or -1.

    Returns ``(ints (n, n_int) int64, floats (n, n_float) float64, skipped, error)`` where
    ``error`` is ``None`` or ``(line_index, code, field_index)`` of the first malformed line
    (with ``skip_bad`` such lines are dropped and counted, and ``error`` is the first of them).
    """
    cdef const char* s = data
    cdef Py_ssize_t n = len(data)
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
    cdef Py_ssize_t max_rows = data.count(b"\n") + 1
    ints = np.empty((max_rows, ni), dtype=np.int64)
    floats = np.empty((max_rows, nf), dtype=np.float64)
    cdef int64_t[:, ::1] iv = ints
    cdef double[:, ::1] fv = floats
    cdef Py_ssize_t p = 0, e, q, a, row = 0, line = 0, skipped = 0
    cdef int col, ii, ff, code, bad_col
    cdef Py_ssize_t err_line = -1
    cdef int err_code = 0, err_col = 0
    with nogil:
        while p < n:
            e = line_end(s, p, n)
            q = e
            if q > p and s[q - 1] == 13:
                q -= 1
            a = p
            while a < q and is_blank(<unsigned char>s[a]):
                a += 1
            if a == q or (comment >= 0 and <unsigned char>s[a] == comment):
                p = e + 1
                line += 1
                continue
            if collapse:
                a = p
                while a < q and sepmap[<unsigned char>s[a]]:
                    a += 1
            else:
                a = p
            col = 0
            ii = 0
            ff = 0
            code = 0
            while True:
                p = a
                while p < q and not sepmap[<unsigned char>s[p]]:
                    p += 1
                # field is s[a:p]
                if col >= ncols:
                    code = E_FIELDS
                    break
                if p == a and not collapse:
                    code = E_EMPTY
                    break
                if kd[col] == 105:
                    code = parse_int(s, a, p, &iv[row, ii])
                    ii += 1
                elif kd[col] == 102:
                    code = parse_float(s, a, p, &fv[row, ff])
                    ff += 1
                if code:
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
                        iv[row, ii] = int_fill
                        ii += 1
                    elif kd[col] == 102:
                        fv[row, ff] = float_fill
                        ff += 1
                    col += 1
                row += 1
            p = e + 1
            line += 1
    error = None if err_line < 0 else (err_line, err_code, err_col)
    return ints[:row], floats[:row], skipped, error


def parse_libsvm(bytes data, bint skip_bad):
    """Parse LIBSVM lines ``label idx:val ...`` (1-based idx; ``#`` starts a comment).

    Returns ``(labels (n,) float64, indptr (n+1,) int64, indices (nnz,) int32 0-based,
    values (nnz,) float64, max_index (int, 0-based, -1 if none), skipped, error)``, with
    ``error`` as in :func:`parse_table` (``field_index`` is the item's position on its line).
    """
    cdef const char* s = data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t max_rows = data.count(b"\n") + 1
    cdef Py_ssize_t max_nnz = data.count(b":")
    labels = np.empty(max_rows, dtype=np.float64)
    indptr = np.zeros(max_rows + 1, dtype=np.int64)
    indices = np.empty(max_nnz, dtype=np.int32)
    values = np.empty(max_nnz, dtype=np.float64)
    cdef double[::1] lab = labels
    cdef int64_t[::1] ptr = indptr
    cdef int32_t[::1] idx = indices
    cdef double[::1] val = values
    cdef Py_ssize_t p = 0, e, q, a, c, row = 0, line = 0, skipped = 0, nnz = 0, row_start
    cdef int64_t ix, max_ix = -1, row_max
    cdef int code, item
    cdef Py_ssize_t err_line = -1
    cdef int err_code = 0, err_col = 0
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
            p = a
            while p < q and not is_blank(<unsigned char>s[p]):
                p += 1
            code = parse_float(s, a, p, &lab[row])
            row_start = nnz
            row_max = max_ix
            item = 1
            while code == 0:
                while p < q and is_blank(<unsigned char>s[p]):
                    p += 1
                if p >= q:
                    break
                a = p
                c = -1
                while p < q and not is_blank(<unsigned char>s[p]):
                    if s[p] == 58 and c < 0:
                        c = p
                    p += 1
                if c < 0:
                    code = E_PAIR
                    break
                if parse_int(s, a, c, &ix) or ix < 1 or ix > 2147483647:
                    code = E_INDEX
                    break
                code = parse_float(s, c + 1, p, &val[nnz])
                if code:
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
