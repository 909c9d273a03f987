"""Graph and matrix shards built from loaded, shuffled tables."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

from paracel import collectives

from .api import agree, load, loadall
from .errors import LoadError
from .inputs import Pattern
from .records import GraphShard, IdMap, MatrixShard, SparseRows, Table
from .shuffle import exchange, owners

_ROLES = {"ratings": ("user", "item", "rating"), "docword": ("doc", "word", "count"),
          "edges": ("src", "dst", "weight")}


def load_as_graph(pattern: Pattern, *, comm: MPI.Intracomm, fmt: str | Callable = "edges",
                  src: str = "src", dst: str = "dst", weight: str | None = "weight",
                  **load_options: Any) -> GraphShard:
    """Collective: the directed graph of the edge lines in ``pattern``, sharded by vertex.

    Worker r owns the vertices v with ``hash(v) % W == r`` (the fmap rule) and receives every
    edge leaving or entering them; see :class:`GraphShard` for the arrays. ``fmt`` must give a
    table with int columns ``src`` and ``dst`` and, if present, float ``weight`` (else 1.0).
    ``load_options`` go to :func:`load` (e.g. ``on_error``, ``comment``). Raises as ``load``.
    """
    table = _table(load(pattern, comm=comm, fmt=fmt, **load_options), fmt)
    for name in (src, dst):
        if name not in table.columns:
            raise ValueError(f"graph format needs an int column {name!r}, has {list(table.columns)}")
    s, d = table[src], table[dst]
    w = table[weight].astype(np.float64) if weight in table.columns else np.ones(len(s))
    size = comm.Get_size()
    edges = {"src": s, "dst": d, "weight": w}
    out = exchange(edges, owners("fmap", size, s, None), comm)
    inc = exchange(edges, owners("fmap", size, d, None), comm)
    vertices = IdMap.build(out["src"], inc["dst"])
    out_nbrs, in_nbrs = IdMap.build(out["dst"]), IdMap.build(inc["src"])
    n = len(vertices)
    out_rows, in_cols = vertices.to_local(out["src"]), vertices.to_local(inc["dst"])
    out_adj = sp.csr_matrix((out["weight"], (out_rows, out_nbrs.to_local(out["dst"]))),
                            shape=(n, len(out_nbrs)))
    in_adj = sp.csc_matrix((inc["weight"], (in_nbrs.to_local(inc["src"]), in_cols)),
                           shape=(len(in_nbrs), n))
    return GraphShard(vertices, out_adj, out_nbrs, in_adj, in_nbrs,
                      np.bincount(out_rows, minlength=n).astype(np.int64),
                      np.bincount(in_cols, minlength=n).astype(np.int64),
                      int(collectives.allreduce(comm, n)), int(collectives.allreduce(comm, len(out_rows))), table.info)


def load_as_matrix(pattern: Pattern, *, comm: MPI.Intracomm, fmt: str | Callable = "ratings",
                   shuffle: str | None = "fmap", row: str | None = None, col: str | None = None,
                   value: str | None = None, col_map: str = "local",
                   **load_options: Any) -> MatrixShard:
    """Collective: a shard of the matrix whose entries are the records in ``pattern``.

    For triple formats (ratings, docword, edges, or a csv/user table naming ``row``/``col``/
    ``value`` columns) the records are shuffled by ``shuffle`` (default fmap: a worker holds
    whole rows) and become a CSR float64 matrix (duplicates summed; value 1.0 without a
    value column) over local row and column indices; ``col_map="global"`` numbers the
    columns by the union of column ids over all workers instead (the same map everywhere).
    For ``fvec`` the shard is dense: row i is the vector of id ``rows.ids[i]``.
    Raises :class:`LoadError` on a duplicate fvec id, otherwise as :func:`load`.
    """
    if col_map not in ("local", "global"):
        raise ValueError(f"col_map must be 'local' or 'global', not {col_map!r}")
    roles = _ROLES.get(fmt, (None, None, None)) if isinstance(fmt, str) else (None,) * 3
    if fmt == "fvec":
        roles = ("id", None, None)
    row, col, value = row or roles[0], col or roles[1], value or roles[2]
    table = _table(load(pattern, comm=comm, fmt=fmt, shuffle=shuffle, row_key=row,
                        col_key=col, **load_options), fmt)
    if fmt == "fvec":
        return _dense(table, row, comm)
    for name in (row, col):
        if name is None or name not in table.columns:
            raise ValueError(f"matrix needs int row and column keys; got row={row!r}, col={col!r}"
                             f" for columns {list(table.columns)}")
    rows = IdMap.build(table[row])
    local_cols = IdMap.build(table[col])
    cols = IdMap(collectives.union_ids(comm, local_cols.ids)) if col_map == "global" else local_cols
    vals = (table[value].astype(np.float64) if value in table.columns
            else np.ones(len(table)))
    matrix = sp.csr_matrix((vals, (rows.to_local(table[row]), cols.to_local(table[col]))),
                           shape=(len(rows), len(cols)))
    return MatrixShard(matrix, rows, cols, table.info)


def _dense(table: Table, key: str, comm: MPI.Intracomm) -> MatrixShard:
    ids, values = table[key], table["values"]
    rows = IdMap.build(ids)
    error = None
    if len(rows) != len(ids):
        uniq, counts = np.unique(ids, return_counts=True)
        error = LoadError(f"fvec id {int(uniq[counts > 1][0])} appears more than once")
    agree(comm, error)
    dense = np.empty_like(values)
    dense[rows.to_local(ids)] = values
    return MatrixShard(dense, rows, None, table.info)


def load_labeled(pattern: Pattern, *, comm: MPI.Intracomm, fmt: str = "libsvm", n_features: int | None = None,
                 everywhere: bool = False, **load_options: Any) -> SparseRows:
    """Collective: labelled rows as :class:`SparseRows` (``X`` float64 CSR, ``y``), from LIBSVM
    lines or from dense CSV lines ``f_1,...,f_k,label`` (``n_features`` = k, required).

    This worker's share, or with ``everywhere`` every row on every worker. Raises ValueError
    for another ``fmt`` or a CSV without ``n_features``, and as :func:`load`.
    """
    read = loadall if everywhere else load
    if fmt == "libsvm":
        return read(pattern, comm=comm, fmt="libsvm", n_features=n_features, **load_options)
    if fmt != "csv":
        raise ValueError(f"labelled rows come as 'libsvm' or 'csv', not {fmt!r}")
    if n_features is None:
        raise ValueError("fmt 'csv' needs n_features (the number of feature columns before the label)")
    names = [f"f{j}" for j in range(n_features)]
    table = read(pattern, comm=comm, fmt="csv", columns=[(name, "float") for name in names] + [("label", "float")],
                 **load_options)
    dense = np.column_stack([table[name] for name in names]) if len(table) else np.zeros((0, n_features))
    return SparseRows(sp.csr_matrix(dense), np.asarray(table["label"], np.float64), table.info)


def _table(result: Any, fmt: Any) -> Table:
    if not isinstance(result, Table):
        raise ValueError(f"format {fmt!r} does not give a table of columns")
    return result

