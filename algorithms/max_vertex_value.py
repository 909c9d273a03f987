"""Max vertex value, Paracel's Pregel-style example: every vertex takes the largest value among
itself and its neighbours until no value changes.

Values start as the vertex ids, and edges count in both directions, so every vertex ends with
the largest id of its (weakly) connected component. Each worker owns the vertices that hash to
it (``paracel_load_as_graph``). A round: every worker writes its vertices' values, waits at
``sync()``, reads its vertices' neighbours' values in one batch and takes the maximum; the job
ends when a round changes nothing on any worker. Values alternate between two key families by
the round's parity (a worker writing round t+1 never overwrites what a slower one reads for
round t); the job is bulk-synchronous whatever its staleness.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel.params import InputPath, PositiveInt


def value_keys(ids: np.ndarray, rnd: int) -> np.ndarray:
    """Parameter-server keys (int64) of the values of vertices ``ids`` after round ``rnd``."""
    return 2 * np.asarray(ids, dtype=np.int64) + (rnd & 1)


def neighbour_max(adjacency: sp.csr_matrix, values: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per row of ``adjacency`` (own vertices x neighbours): the max of ``own`` and the
    ``values`` of the row's neighbours."""
    out = own.copy()
    rows = np.flatnonzero(np.diff(adjacency.indptr))
    if len(rows):
        best = np.maximum.reduceat(values[adjacency.indices], adjacency.indptr[rows])
        out[rows] = np.maximum(out[rows], best)
    return out


class MaxVertexValue(paralg):
    """Propagate the largest vertex id over the undirected graph in ``input`` (edge lines
    ``src dst``, ``#`` comments), at most ``rounds`` rounds.

    Writes ``max_value_<w>.txt`` (``vertex<TAB>value`` for the vertices of worker w) and logs
    how many values changed each round. Raises ``RuntimeError`` if values still change after
    ``rounds`` rounds.
    """

    def __init__(self, input: InputPath, rounds: PositiveInt = 1000) -> None:
        self.input, self.rounds = input, rounds
        self.values: dict[int, int] = {}

    def solve(self) -> None:
        graph = self.paracel_load_as_graph(self.input)
        ids = graph.vertices.ids
        neighbours = np.union1d(graph.out_nbrs.ids, graph.in_nbrs.ids)
        # own vertices x neighbours, edges in both directions (the weights do not matter)
        out_cols = np.searchsorted(neighbours, graph.out_nbrs.ids)[graph.out_adj.indices]
        in_t = graph.in_adj.T.tocsr()
        in_cols = np.searchsorted(neighbours, graph.in_nbrs.ids)[in_t.indices]
        rows = np.concatenate([np.repeat(np.arange(len(ids)), np.diff(graph.out_adj.indptr)),
                               np.repeat(np.arange(len(ids)), np.diff(in_t.indptr))])
        adjacency = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, np.concatenate([out_cols, in_cols]))),
                                  shape=(len(ids), len(neighbours)))
        adjacency.sum_duplicates()
        value = ids.copy()
        self.set_total_iters(self.rounds)
        for rnd in range(self.rounds):
            self.paracel_write_multi(value_keys(ids, rnd), value)
            self.sync()
            seen = self.paracel_read_multi(value_keys(neighbours, rnd), as_array=True)
            new = neighbour_max(adjacency, seen, value)
            changed = new != value
            value = new
            total = int(self.allreduce(np.array(changed.sum(), dtype=np.int64)))
            if self.get_worker_id() == 0:
                self.log_metrics(rnd, changed=total)
            if total == 0:
                break
        else:
            raise RuntimeError(f"values still changed after {self.rounds} rounds; raise params.rounds")
        self.values = dict(zip(ids.tolist(), value.tolist()))
        self.paracel_dump("max_value", self.values)
