"""Data formats: each turns line-aligned chunks into parts, and parts into one result.

A format object is made per load (``make_format``) and has ``header`` (lines to skip at the top
of each file), ``parse(chunk, skip_bad) -> (part, skipped, first_error)`` and
``combine(parts) -> result``. Errors name the file and the line.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, Union

import numpy as np

from paracel._ext.parse import parse_libsvm, parse_table
from paracel.importing import NotImportable, import_function, is_import_name

from .errors import LineError, LoadError
from .inputs import InputFile, file_label, line_number, open_stream
from .records import Lines, Records, SparseRows, Table, Text
from .split import Chunk

PARSE_ERRORS = {1: "wrong number of fields", 2: "not an integer", 3: "not a number",
                4: "item is not idx:val", 5: "feature index must be an integer >= 1",
                6: "empty field"}
_KINDS = {"int": "i", "int64": "i", "i": "i", "float": "f", "float64": "f", "f": "f",
          "skip": "_", "_": "_"}
WHITESPACE = b" \t"

Parser = Union[Callable[[list[str]], Any], str]


class Format(Protocol):
    """What a loader needs of a format (built-ins below; users pass a parser instead)."""

    header: int  # lines to skip at the top of each file

    def parse(self, chunk: Chunk, skip_bad: bool) -> tuple[Any, int, str | None]:
        """(part, lines skipped, first skipped line as 'file:line: reason' or None);
        raises LoadError naming file and line unless ``skip_bad``."""

    def combine(self, parts: list) -> Any:
        """One result from the parts of consecutive chunks, in order."""


def locate(chunk: Chunk, index: int) -> str:
    """``file:line`` of the line at 0-based ``index`` within ``chunk``."""
    return f"{file_label(chunk.path)}:{line_number(chunk.path, chunk.gz, chunk.offset) + index}"


def bad_line(chunk: Chunk, index: int, reason: str) -> str:
    text = bytes(chunk.data).split(b"\n", index + 1)[index][:200]
    return f"{locate(chunk, index)}: {reason}: {text!r}"


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Column-wise concatenation of parts (a lone part is kept as it is, without a copy)."""
    if len(parts) == 1:
        return {k: np.asarray(v) for k, v in parts[0].items()}
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


class TableFormat:
    """Delimited numeric fields into named int64/float64 columns (csv, tsv, ratings, edges...).

    ``layout`` lists ``(name, kind)`` per field in file order, kind ``i``/``f``/``_`` (ignored);
    fields after the first ``required`` are optional (``int_fill`` / ``float_fill`` when
    absent). ``keys`` are the default (row, col, value) columns for shuffles and matrices.
    """

    def __init__(self, name: str, layout: Sequence[tuple[str, str]], *, required: int | None = None,
                 seps: bytes = WHITESPACE, collapse: bool = True, comment: bytes | None = None,
                 header: int = 0, int_fill: int = -1, float_fill: float = 1.0,
                 keys: tuple[str | None, str | None, str | None] = (None, None, None),
                 header_names: tuple[str, ...] = ()) -> None:
        self.name, self.layout = name, list(layout)
        self.kinds = "".join(k for _, k in self.layout)
        self.required = len(self.layout) if required is None else required
        self.seps, self.collapse, self.header = seps, collapse, header
        self.comment = -1 if comment is None else comment[0]
        self.int_fill, self.float_fill = int_fill, float_fill
        self.keys = keys
        self.header_names = header_names

    def header_meta(self, files: list[InputFile]) -> dict[str, int]:
        """The integer header lines of the first file, by name (docword: n_docs, n_words, nnz)."""
        if not self.header_names or not files:
            return {}
        with open_stream(files[0].path, files[0].gz) as f:
            lines = [f.readline() for _ in self.header_names]
        meta = {}
        for i, (name, line) in enumerate(zip(self.header_names, lines)):
            try:
                meta[name] = int(line)
            except ValueError:
                raise LoadError(f"{file_label(files[0].path)}:{i + 1}: header line {name!r} is "
                                f"not an integer: {line[:200]!r}") from None
        return meta

    def parse(self, chunk: Chunk, skip_bad: bool):
        ints, floats, skipped, err = parse_table(
            chunk.data, self.kinds.encode(), self.required, self.seps, self.collapse,
            self.comment, skip_bad, self.int_fill, self.float_fill)
        message = None
        if err is not None:
            line, code, field = err
            reason = PARSE_ERRORS[code]
            if code == 1:
                reason += f" (expected {self._expected()})"
            else:
                reason += f" in field {field + 1}"
            message = bad_line(chunk, line, reason)
            if not skip_bad:
                raise LoadError(message)
        return self._columns(ints, floats), skipped, message

    def _expected(self) -> str:
        n = len(self.layout)
        return str(n) if self.required == n else f"{self.required} to {n}"

    def _columns(self, ints: np.ndarray, floats: np.ndarray) -> dict[str, np.ndarray]:
        cols, i, f = {}, 0, 0
        for name, kind in self.layout:
            if kind == "i":
                cols[name] = ints[i]
                i += 1
            elif kind == "f":
                cols[name] = floats[f]
                f += 1
        return cols

    def combine(self, parts: list[dict[str, np.ndarray]]) -> Table:
        if not parts:
            parts = [self._columns(np.empty((self.kinds.count("i"), 0), np.int64),
                                   np.empty((self.kinds.count("f"), 0), np.float64))]
        return Table(concat_columns(parts))


class FvecFormat(TableFormat):
    """``id f1,f2,...``: int64 ``id`` (n,) and float64 ``values`` (n, dim). Without ``dim`` the
    first data line fixes it; every other line must have the same length."""

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        super().__init__("fvec", [("id", "i")], seps=b" \t,", keys=("id", None, None))
        if dim is not None:
            self._set_dim(dim)

    def _set_dim(self, dim: int) -> None:
        self.dim = dim
        self.layout = [("id", "i")] + [(f"v{j}", "f") for j in range(dim)]
        self.kinds, self.required = "i" + "f" * dim, dim + 1

    def parse(self, chunk: Chunk, skip_bad: bool):
        if self.dim is None:
            data, start = bytes(chunk.data), 0
            while start < len(data):
                end = data.find(b"\n", start)
                end = len(data) if end < 0 else end
                fields = data[start:end].replace(b",", b" ").split()
                if fields:
                    self._set_dim(len(fields) - 1)
                    break
                start = end + 1
        return super().parse(chunk, skip_bad)

    def _columns(self, ints: np.ndarray, floats: np.ndarray) -> dict[str, np.ndarray]:
        return {"id": ints[0], "values": np.ascontiguousarray(floats.T)}

    def combine(self, parts: list[dict[str, np.ndarray]]) -> Table:
        if not parts:
            parts = [{"id": np.empty(0, np.int64),
                      "values": np.empty((0, self.dim or 0), np.float64)}]
        return Table(concat_columns(parts))


class LibsvmFormat:
    """``label idx:val ...`` (1-based idx) into :class:`SparseRows`. ``n_features`` fixes the
    column count (an index beyond it is an error); without it the loader agrees on the max."""

    header = 0

    def __init__(self, n_features: int | None = None) -> None:
        self.n_features = n_features

    def parse(self, chunk: Chunk, skip_bad: bool):
        y, indptr, indices, values, max_ix, skipped, err = parse_libsvm(chunk.data, skip_bad)
        message = None
        if err is not None:
            line, code, item = err
            message = bad_line(chunk, line, f"{PARSE_ERRORS[code]} (item {item})")
            if not skip_bad:
                raise LoadError(message)
        if self.n_features is not None and max_ix >= self.n_features:
            raise LoadError(self._too_wide(chunk))
        return (y, indptr, indices, values, max_ix), skipped, message

    def _too_wide(self, chunk: Chunk) -> str:
        for i, line in enumerate(bytes(chunk.data).split(b"\n")):
            heads = [item.split(b":")[0] for item in line.split(b"#")[0].split()[1:]]
            if any(h.isdigit() and int(h) > self.n_features for h in heads):
                return bad_line(chunk, i, f"feature index beyond n_features={self.n_features}")
        raise AssertionError("parser reported an index beyond n_features that is not there")

    def combine(self, parts: list) -> SparseRows:
        y = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
        indices = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int32)
        values = np.concatenate([p[3] for p in parts]) if parts else np.empty(0)
        indptr, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            indptr.append(p[1][1:] + base)
            base += p[1][-1]
        max_ix = max((p[4] for p in parts), default=-1)
        n_features = self.n_features if self.n_features is not None else max_ix + 1
        import scipy.sparse as sp  # here: a lines job need not import scipy (0.1 s per rank)
        X = sp.csr_matrix((values, indices, np.concatenate(indptr)), shape=(len(y), n_features))
        return SparseRows(X, y)


class LinesFormat:
    """Raw lines as ``str``, decoded with ``encoding`` (UTF-8 by default; bytes it cannot
    decode are an error naming the line)."""

    header = 0
    encoding = "utf-8"

    def __init__(self, header: int = 0, encoding: str = "utf-8") -> None:
        self.header = header
        self.encoding = encoding
        "".encode(encoding)  # an unknown encoding fails here, before any file is read

    def decode(self, chunk: Chunk, skip_bad: bool) -> tuple[list[str], Sequence[int], int, str | None]:
        """The chunk's lines, their indices in the chunk, the count skipped and the first error."""
        data = bytes(chunk.data)
        data = data[:-1] if data.endswith(b"\n") else data
        try:
            text = data.decode(self.encoding)
            if "\r" in text:  # CRLF endings, and a last line ending in a bare CR
                text = text.replace("\r\n", "\n").removesuffix("\r")
            lines = text.split("\n")
            return lines, range(len(lines)), 0, None
        except UnicodeDecodeError as exc:
            first = bad_line(chunk, data.count(b"\n", 0, exc.start), f"invalid {self.encoding.upper()}")
            if not skip_bad:
                raise LoadError(first) from None
        lines, where = [], []
        for i, raw in enumerate(data.split(b"\n")):
            try:
                lines.append(raw.decode(self.encoding).removesuffix("\r"))
                where.append(i)
            except UnicodeDecodeError:
                pass
        return lines, where, len(data.split(b"\n")) - len(lines), first

    def parse(self, chunk: Chunk, skip_bad: bool):
        lines, _, skipped, first = self.decode(chunk, skip_bad)
        return lines, skipped, first

    def combine(self, parts: list[list[str]]) -> Lines:
        return Lines(parts[0] if len(parts) == 1 else [line for part in parts for line in part])


class TextFormat(LinesFormat):
    """Whole text: each chunk's lines as one ``str``, decoded with ``encoding`` and line endings
    kept, for scanners (e.g. tokenisers) that need no object per line. With ``skip_bad``, lines
    that cannot be decoded are dropped and the rest joined by LF."""

    def parse(self, chunk: Chunk, skip_bad: bool):
        data = bytes(chunk.data)
        try:
            return (data.decode(self.encoding), data.count(b"\n") + (not data.endswith(b"\n"))), 0, None
        except UnicodeDecodeError:
            lines, _, skipped, first = self.decode(chunk, skip_bad)
            return ("\n".join(lines), len(lines)), skipped, first

    def combine(self, parts: list[tuple[str, int]]) -> Text:
        return Text([text for text, _ in parts], sum(n for _, n in parts))


class UserFormat(LinesFormat):
    """A user parser ``fn(lines: list[str]) -> dict[str, ndarray] | list`` applied per chunk.

    It may raise :class:`LineError` for a bad line (index into ``lines``); the loader then
    names the file and line, or with ``on_error="skip"`` drops that line and calls it again.
    """

    def __init__(self, parser: Parser, header: int = 0, encoding: str = "utf-8") -> None:
        super().__init__(header, encoding)
        self.fn = resolve_parser(parser)

    def parse(self, chunk: Chunk, skip_bad: bool):
        lines, where, skipped, first = self.decode(chunk, skip_bad)
        while True:
            try:
                return self.fn(lines), skipped, first
            except LineError as exc:
                message = bad_line(chunk, where[exc.index], str(exc))
                if not skip_bad:
                    raise LoadError(message) from None
                first = first or message
                where = list(where)  # a range while every line decoded
                del lines[exc.index], where[exc.index]
                skipped += 1

    def combine(self, parts: list) -> Table | Records:
        if parts and isinstance(parts[0], dict):
            return Table(concat_columns(parts))
        return Records([item for part in parts for item in part])


def resolve_parser(parser: Parser) -> Callable[[list[str]], Any]:
    """A parser callable from itself or from ``"package.module:function"``; raises LoadError."""
    if callable(parser):
        return parser
    try:
        return import_function(parser)
    except NotImportable as exc:
        raise LoadError(f"cannot import parser {parser!r}: {exc.reason}") from None


def parse_layout(columns: Sequence) -> list[tuple[str, str]]:
    """``["user:int", ("rating", "float"), "_"]`` or ``{"user": "int", ...}`` as (name, kind)."""
    items = columns.items() if isinstance(columns, dict) else columns
    layout = []
    for j, item in enumerate(items):
        name, _, kind = item.partition(":") if isinstance(item, str) else (item[0], ":", item[1])
        if name in ("_", "skip") and not kind:
            name, kind = f"_{j}", "skip"
        if kind not in _KINDS:
            raise ValueError(f"column {name!r}: kind {kind!r} is not one of int, float, skip")
        layout.append((name, _KINDS[kind]))
    return layout


def make_format(fmt: str | Callable, *, columns: Sequence | None = None, header: int = 0,
                comment: str | None = None, n_features: int | None = None,
                dim: int | None = None, delimiter: str | None = None, encoding: str = "utf-8") -> Format:
    """The format object for ``fmt`` (a name below, or a user parser); raises ValueError
    (LookupError for an unknown ``encoding``, which ``lines`` and user parsers take)."""
    com = None if comment is None else comment.encode()
    if callable(fmt) or is_import_name(fmt):
        return UserFormat(fmt, header, encoding)
    if encoding != "utf-8" and fmt not in ("lines", "text"):
        raise ValueError(f"encoding is for fmt='lines', 'text' and user parsers, not {fmt!r}")
    if fmt == "lines":
        return LinesFormat(header, encoding)
    if fmt == "text":
        return TextFormat(header, encoding)
    if fmt == "libsvm":
        return LibsvmFormat(n_features)
    if fmt == "fvec":
        return FvecFormat(dim)
    if fmt == "ratings":
        return TableFormat("ratings", [("user", "i"), ("item", "i"), ("rating", "f"),
                                       ("time", "i")], required=3, seps=b" \t,:", header=header,
                           comment=com, keys=("user", "item", "rating"))
    if fmt == "edges":
        return TableFormat("edges", [("src", "i"), ("dst", "i"), ("weight", "f")], required=2,
                           comment=b"#" if comment is None else com, header=header,
                           keys=("src", "dst", "weight"))
    if fmt == "docword":
        return TableFormat("docword", [("doc", "i"), ("word", "i"), ("count", "i")],
                           header=3, comment=com, keys=("doc", "word", "count"),
                           header_names=("n_docs", "n_words", "nnz"))
    seps = {"csv": b",", "tsv": b"\t", "whitespace": WHITESPACE}
    if fmt in seps:
        if columns is None:
            raise ValueError(f"format {fmt!r} needs columns=[('name', 'int'|'float'|'skip'), ...]")
        layout = parse_layout(columns)
        names = [n for n, k in layout if k != "_"]
        sep = seps[fmt] if delimiter is None else delimiter.encode()
        return TableFormat(fmt, layout, seps=sep, collapse=fmt == "whitespace", comment=com,
                           header=header, keys=(names[0] if names else None,
                                                names[1] if len(names) > 1 else None,
                                                names[2] if len(names) > 2 else None))
    raise ValueError(f"unknown format {fmt!r}: use lines, csv, tsv, whitespace, libsvm, ratings, "
                     f"edges, docword, fvec, or a parser 'package.module:function'")
