"""What the loaders return: plain dataclasses of numpy/scipy arrays."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass
class LoadInfo:
    """How a load went: ``skipped`` malformed lines dropped on this worker (``on_error="skip"``),
    ``skipped_total`` over all workers, ``first_skipped`` the first such line as ``file:line:
    reason`` (or None), ``meta`` facts from the input (e.g. a docword header)."""

    skipped: int = 0
    skipped_total: int = 0
    first_skipped: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lines:
    """Raw text lines (UTF-8 decoded, without the LF or CRLF ending), in file order."""

    lines: list[str]
    info: LoadInfo = field(default_factory=LoadInfo)

    def __len__(self) -> int:
        return len(self.lines)


@dataclass
class Text:
    """Text as decoded (line endings kept): ``texts``, one ``str`` per block of whole lines, in
    file order; ``n_lines``, how many lines they hold."""

    texts: list[str]
    n_lines: int
    info: LoadInfo = field(default_factory=LoadInfo)

    def __len__(self) -> int:
        return self.n_lines


@dataclass
class Records:
    """Whatever a user parser returned as lists, concatenated in file order."""

    items: list
    info: LoadInfo = field(default_factory=LoadInfo)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Table:
    """Parsed records as named columns: each array has n rows (shape (n,) or (n, d)).

    Built-in formats give int64 ids and float64 values, e.g. ratings: ``user``, ``item``
    (int64), ``rating`` (float64), ``time`` (int64, -1 where absent).
    """

    columns: dict[str, np.ndarray]
    info: LoadInfo = field(default_factory=LoadInfo)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class SparseRows:
    """LIBSVM rows: ``X`` a CSR matrix (n, n_features) of float64 with int32 0-based column
    indices, ``y`` (n,) float64 labels."""

    X: sp.csr_matrix
    y: np.ndarray
    info: LoadInfo = field(default_factory=LoadInfo)

    def __len__(self) -> int:
        return self.X.shape[0]


@dataclass
class IdMap:
    """Global ids (sorted, unique, int64) and their contiguous local indices 0..n-1."""

    ids: np.ndarray

    @classmethod
    def build(cls, *keys: np.ndarray) -> "IdMap":
        """The map of every id occurring in ``keys``."""
        parts = [np.asarray(k, dtype=np.int64).ravel() for k in keys]
        return cls(np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def to_local(self, ids: np.ndarray) -> np.ndarray:
        """Local indices (int64) of global ``ids``; raises KeyError if one is not in the map."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        ok = pos < len(self.ids)
        ok[ok] = self.ids[pos[ok]] == ids[ok]
        if not ok.all():
            raise KeyError(f"ids not in this map: {ids[~ok][:5].tolist()}")
        return pos

    def to_global(self, local: np.ndarray) -> np.ndarray:
        """Global ids (int64) of local indices."""
        return self.ids[np.asarray(local)]


@dataclass
class MatrixShard:
    """One worker's block of a matrix: ``matrix`` is CSR float64 (n_rows, n_cols) for sparse
    formats (duplicate entries summed) or a dense float64 ndarray (n_rows, dim) for ``fvec``;
    ``rows`` maps its rows (and ``cols``, None when dense, its columns) to global ids."""

    matrix: sp.csr_matrix | np.ndarray
    rows: IdMap
    cols: IdMap | None
    info: LoadInfo = field(default_factory=LoadInfo)


@dataclass
class GraphShard:
    """The vertices a worker owns (``owner(v) = hash(v) % W``) with all their edges.

    ``out_adj``: CSR (n_local, len(out_nbrs)), row i = out-edges of ``vertices.ids[i]``,
    values = weights (float64; duplicate edges summed), columns mapped by ``out_nbrs``.
    ``in_adj``: CSC (len(in_nbrs), n_local), column j = in-edges of ``vertices.ids[j]``.
    ``out_degree``/``in_degree``: (n_local,) int64 edge counts. ``n_vertices``/``n_edges``:
    totals over all workers.
    """

    vertices: IdMap
    out_adj: sp.csr_matrix
    out_nbrs: IdMap
    in_adj: sp.csc_matrix
    in_nbrs: IdMap
    out_degree: np.ndarray
    in_degree: np.ndarray
    n_vertices: int
    n_edges: int
    info: LoadInfo = field(default_factory=LoadInfo)
