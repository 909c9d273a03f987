"""PageRank by power iteration on a graph sharded by vertex, contributions through the servers.

Each worker owns the vertices that hash to it (``paracel_load_as_graph``, Paracel's ``fmap``)
and keeps their ranks. A round: every worker writes the contribution ``r_u / d_u`` of each
vertex it owns that has out-edges (``d_u``: its out-edge weight, duplicates and self-loops
counted), waits at ``sync()``, reads the contributions of its vertices' in-neighbours in one
batch and computes ``r'_v = (1 - damping) / N + damping * (sum_{u->v} w_uv r_u / d_u +
dangling / N)``, where ``dangling`` is the rank held by vertices without out-edges. The
iteration stops once the L1 change of a round is below ``tol``, or after ``rounds``.

Contributions alternate between two key families by the round's parity, so a worker that
writes round t+1 never overwrites what a slower worker still reads for round t. The job is
bulk-synchronous whatever its staleness: ``sync()`` orders every round.
"""
from __future__ import annotations

import time
from typing import Annotated

import numpy as np

from paracel import paralg
from paracel.params import Above, AtMost, InputPath, PositiveInt


def contribution_keys(ids: np.ndarray, rnd: int) -> np.ndarray:
    """Parameter-server keys (int64) of the contributions of vertices ``ids`` in round ``rnd``."""
    return 2 * np.asarray(ids, dtype=np.int64) + (rnd & 1)


class PageRank(paralg):
    """PageRank of the directed graph in ``input`` (edge lines ``src dst [weight]``, ``#``
    comments, e.g. SNAP files).

    ``damping``: the probability of following an edge; ``tol``: stop when a round changes the
    ranks by less than this in L1; ``rounds``: at most this many rounds; ``topk``: how many
    top vertices worker 0 prints. Writes ``pagerank_<w>.txt`` (``vertex<TAB>rank`` lines for
    the vertices of worker w) and ``top.txt``; logs the L1 change of every round and the seconds since the rounds began. Raises
    ``FloatingPointError`` if a rank turns non-finite.
    """

    def __init__(self, input: InputPath, damping: Annotated[float, Above(0), AtMost(1)] = 0.85,
                 tol: Annotated[float, Above(0)] = 1e-12, rounds: PositiveInt = 200,
                 topk: PositiveInt = 10) -> None:
        self.input, self.damping, self.tol, self.rounds, self.topk = input, damping, tol, rounds, topk
        self.ranks: dict[int, float] = {}
        self.change = float("inf")

    def solve(self) -> None:
        graph = self.paracel_load_as_graph(self.input)
        n = graph.n_vertices
        if n == 0:
            raise ValueError(f"{self.input}: the graph has no vertices")
        ids = graph.vertices.ids
        out_weight = np.asarray(graph.out_adj.sum(axis=1)).ravel()
        sends = out_weight > 0
        in_t = graph.in_adj.T.tocsr()  # (n_local, len(in_nbrs)): row v sums its in-edges
        rank = np.full(len(ids), 1.0 / n)
        self.set_total_iters(self.rounds)
        rnd, start = 0, time.perf_counter()
        for rnd in range(self.rounds):
            self.paracel_write_multi(contribution_keys(ids[sends], rnd), rank[sends] / out_weight[sends])
            self.sync()
            contrib = self.paracel_read_multi(contribution_keys(graph.in_nbrs.ids, rnd), as_array=True)
            dangling = float(self.allreduce(np.array(rank[~sends].sum())))
            new = (1.0 - self.damping) / n + self.damping * (in_t @ contrib + dangling / n)
            local_change = np.abs(new - rank).sum()
            rank = new
            self.change = float(self.allreduce(np.array(local_change)))
            if not np.isfinite(self.change):
                raise FloatingPointError(f"PageRank diverged in round {rnd}: L1 change {self.change}")
            if self.get_worker_id() == 0:
                self.log_metrics(rnd, l1_change=self.change, seconds=time.perf_counter() - start)
            if self.change < self.tol:
                break
        self.ranks = dict(zip(ids.tolist(), rank.tolist()))
        self.paracel_dump("pagerank", self.ranks)
        self._report_top(ids, rank, rnd + 1)

    def _report_top(self, ids: np.ndarray, rank: np.ndarray, rounds: int) -> None:
        """Worker 0 writes and prints the ``topk`` vertices (ties: the smaller id first)."""
        best = np.lexsort((ids, -rank))[:self.topk]
        tops = self.gather(list(zip(ids[best].tolist(), rank[best].tolist())))
        if tops is None:
            return
        top = sorted((pair for part in tops for pair in part), key=lambda p: (-p[1], p[0]))[:self.topk]
        with open(self.output_dir / "top.txt", "w", encoding="utf-8") as out:
            out.writelines(f"{v}\t{r:.17g}\n" for v, r in top)
        print(f"[pagerank] {rounds} rounds, L1 change {self.change:.3g}; top {self.topk}: "
              + ", ".join(f"{v}:{r:.6f}" for v, r in top), flush=True)
