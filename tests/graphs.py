"""Single-process references for the graph algorithms' tests and benchmarks (scipy only)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def read_graph(path: Path) -> tuple[np.ndarray, sp.csr_matrix]:
    """(sorted vertex ids, adjacency CSR over their positions, duplicate edges summed) of a
    SNAP-style edge list (``#`` comments, ``src dst`` per line)."""
    edges = np.loadtxt(path, comments="#", dtype=np.int64, ndmin=2)
    ids, local = np.unique(edges[:, :2], return_inverse=True)
    src, dst = local.reshape(-1, 2).T
    return ids, sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(len(ids), len(ids)))


def scipy_pagerank(path: Path, damping: float = 0.85, tol: float = 1e-13) -> tuple[dict[int, float], int, float]:
    """(rank of every vertex, rounds, seconds per round): power iteration with uniform teleport
    and dangling mass, until a round's L1 change is below ``tol``."""
    ids, adj = read_graph(path)
    n = len(ids)
    out = np.asarray(adj.sum(axis=1)).ravel()
    walk_t = (sp.diags(np.divide(1.0, out, out=np.zeros(n), where=out > 0)) @ adj).T.tocsr()
    dangling = out == 0
    rank = np.full(n, 1.0 / n)
    start, rounds = time.perf_counter(), 0
    while rounds < 1000:
        rounds += 1
        new = (1 - damping) / n + damping * (walk_t @ rank + rank[dangling].sum() / n)
        change = np.abs(new - rank).sum()
        rank = new
        if change < tol:
            break
    return dict(zip(ids.tolist(), rank.tolist())), rounds, (time.perf_counter() - start) / rounds


def read_vertex_values(folder: Path, prefix: str) -> dict[int, float]:
    """The ``vertex<TAB>value`` lines of every ``<prefix>_<worker>.txt`` in ``folder``; raises
    AssertionError if a vertex appears twice (each belongs to exactly one worker)."""
    values: dict[int, float] = {}
    for part in folder.glob(f"{prefix}_*.txt"):
        for line in part.read_text().splitlines():
            vertex, value = line.split("\t")
            assert int(vertex) not in values, f"vertex {vertex} written twice"
            values[int(vertex)] = float(value)
    return values
