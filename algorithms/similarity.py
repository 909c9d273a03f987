"""Item similarity (dense cosine; sparse cosine and Jaccard) with Paracel's thresholds.

Workers own items; each scores its own items against every item, keeps the candidates that
pass ``min_sim`` / ``min_cooc`` (never the item itself) and the best ``topk`` of each, ranked
by similarity descending with ties broken by the smaller item id. The numerical core
(``dense_topk``, ``sparse_topk``, ``Neighbors``) is shared with the adjusted top-k
recommender and lives in ``paracel._ext.rec_kernels``.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from paracel import paralg
from paracel._ext.rec_kernels import Neighbors, dense_topk, sparse_topk
from paracel.params import InputPath, PositiveInt


class Similarity(paralg):
    """Top-k item neighbours: ``mode="sparse"`` from a ratings file (cosine or Jaccard over the
    item columns), ``mode="dense"`` from an fvec file of item vectors (``id v1 v2 ...``, cosine).

    Workers own items (``fmap`` by item), assemble the whole matrix from every worker's share
    (``allreduce_sparse`` / ``allgather_array``) and score their own items against all.
    ``min_sim`` null keeps every similarity. Writes ``neighbors_<w>.txt``
    (``item<TAB>nbr:sim ...``) and logs the pairs kept.
    """

    def __init__(self, input: InputPath, mode: Literal["sparse", "dense"] = "sparse",
                 measure: Literal["cosine", "jaccard"] = "cosine", topk: PositiveInt = 20,
                 min_sim: float | None = None, min_cooc: PositiveInt = 1, block: PositiveInt = 512) -> None:
        super().__init__()
        if mode == "dense" and measure != "cosine":
            raise ValueError("mode 'dense' measures cosine only (jaccard needs sparse ratings)")
        self.input, self.mode, self.measure, self.topk = input, mode, measure, topk
        self.min_sim = -np.inf if min_sim is None else float(min_sim)
        self.min_cooc, self.block = min_cooc, block
        self.neighbors: Neighbors | None = None

    def solve(self) -> None:
        nb = self._sparse() if self.mode == "sparse" else self._dense()
        self.neighbors = nb
        self.paracel_dump("neighbors", nb.as_text())
        items, pairs = self.allreduce(np.array([len(nb.item_ids), len(nb.ids)]))
        if self.get_worker_id() == 0:
            self.log_metrics(0, items=int(items), pairs=int(pairs))

    def _sparse(self) -> Neighbors:
        ratings = self.paracel_load_ratings(self.input, by="item")
        # Each worker holds every rating of its items: their sum is the whole matrix.
        everything = self.allreduce_sparse(ratings.matrix())
        return sparse_topk(np.unique(ratings.items), everything, self.topk, self.measure, self.min_sim,
                           self.min_cooc, self.block)

    def _dense(self) -> Neighbors:
        data = self.paracel_load(self.input, fmt="fvec", shuffle="fmap")
        ids, values = data["id"], np.asarray(data["values"], dtype=np.float64)
        all_ids, all_values = self.allgather_array(ids), self.allgather_array(values)
        vectors = np.zeros((all_ids.max(initial=-1) + 1, values.shape[1]))
        vectors[all_ids] = all_values
        return dense_topk(np.sort(ids), vectors, self.topk, self.min_sim, self.block)
