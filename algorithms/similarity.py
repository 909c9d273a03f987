"""Item similarity (dense cosine; sparse cosine and Jaccard) with Paracel's thresholds.

The numerical core works on one worker's items: it scores them against every item, keeps the
candidates that pass ``min_sim`` / ``min_cooc`` (never the item itself) and the best ``topk``
of each, ranked by similarity descending with ties broken by the smaller item id.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel._ext import rec_kernels

MEASURES = ("cosine", "jaccard")


@dataclass
class Neighbors:
    """Ranked neighbour lists in CSR form: row ``r`` belongs to item ``item_ids[r]`` and its
    neighbours are ``ids[indptr[r]:indptr[r+1]]`` with similarities ``sims[...]``, best first."""

    item_ids: np.ndarray
    indptr: np.ndarray
    ids: np.ndarray
    sims: np.ndarray

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour ids, similarities) of row ``r``."""
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.ids[lo:hi], self.sims[lo:hi]

    def to_csr(self, n_items: int) -> sp.csr_matrix:
        """The lists as an ``n_items x n_items`` sparse matrix (rows of absent items empty)."""
        rows = np.repeat(self.item_ids, np.diff(self.indptr))
        return sp.csr_matrix((self.sims, (rows, self.ids)), shape=(n_items, n_items))

    @staticmethod
    def concat(parts: list["Neighbors"]) -> "Neighbors":
        """Join the lists of disjoint item sets, in the order given."""
        offsets = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
        return Neighbors(np.concatenate([p.item_ids for p in parts]), indptr.astype(np.int64),
                         np.concatenate([p.ids for p in parts]), np.concatenate([p.sims for p in parts]))

    @staticmethod
    def empty() -> "Neighbors":
        """No items."""
        return Neighbors(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))


def _self_exclusion(item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(len(item_ids) + 1, dtype=np.int64), np.asarray(item_ids, dtype=np.int64)


def _blocks(n: int, block: int):
    for lo in range(0, n, block):
        yield lo, min(n, lo + block)


def dense_topk(own_ids: np.ndarray, vectors: np.ndarray, topk: int,
               min_sim: float = -np.inf, block: int = 512) -> Neighbors:
    """Cosine top-``topk`` neighbours of items ``own_ids`` among all rows of ``vectors``.

    ``vectors`` is ``(n_items, d)``, row i the vector of item i (e.g. item factors). Items with a
    zero vector have no neighbours and are nobody's neighbour. Work is done ``block`` items at
    a time so memory stays O(block * n_items).
    """
    own_ids = np.asarray(own_ids, dtype=np.int64)
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = x / norms[:, None]  # zero rows become NaN and are skipped by the kernel
    parts = []
    for lo, hi in _blocks(len(own_ids), block):
        ids = own_ids[lo:hi]
        sims = np.ascontiguousarray(unit[ids] @ unit.T)
        indptr, nbr, val = rec_kernels.topk_dense(sims, topk, min_sim, *_self_exclusion(ids))
        parts.append(Neighbors(ids, indptr, nbr, val))
    return Neighbors.concat(parts) if parts else Neighbors.empty()


def sparse_topk(own_ids: np.ndarray, ratings: sp.spmatrix, topk: int, measure: str = "cosine",
                min_sim: float = -np.inf, min_cooc: int = 1, block: int = 512) -> Neighbors:
    """Top-``topk`` neighbours of items ``own_ids`` from a ``users x items`` rating matrix.

    cosine(i, j) = r_i . r_j / (|r_i| |r_j|) over the rating columns; jaccard(i, j) =
    |U_i & U_j| / |U_i | U_j| over the sets of users who rated each. Only pairs with at least
    ``min_cooc`` (>= 1) common users and similarity >= ``min_sim`` are kept.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if min_cooc < 1:
        raise ValueError("min_cooc must be >= 1 (pairs without common users have no similarity)")
    own_ids = np.asarray(own_ids, dtype=np.int64)
    r = sp.csc_matrix(ratings, dtype=np.float64)
    r.sum_duplicates()
    if np.any(r.data == 0):
        raise ValueError("explicit zero ratings are ambiguous with missing ones; drop them first")
    b = r.copy()
    b.data[:] = 1.0
    norms = np.sqrt(np.asarray(r.multiply(r).sum(axis=0)).ravel())
    support = np.asarray(b.sum(axis=0)).ravel()
    parts = []
    for lo, hi in _blocks(len(own_ids), block):
        ids = own_ids[lo:hi]
        # products of positive entries only: dot and co-occurrence share one sparsity pattern
        dots = sp.csr_matrix(r[:, ids].T @ r)
        cooc = sp.csr_matrix(b[:, ids].T @ b)
        dots.sort_indices()
        cooc.sort_indices()
        if not (np.array_equal(dots.indptr, cooc.indptr) and np.array_equal(dots.indices, cooc.indices)):
            raise ValueError("ratings must be positive (dot and co-occurrence patterns differ)")
        rows = np.repeat(ids, np.diff(dots.indptr))
        if measure == "cosine":
            sims = dots.data / (norms[rows] * norms[dots.indices])
        else:
            sims = cooc.data / (support[rows] + support[dots.indices] - cooc.data)
        indptr, nbr, val = rec_kernels.topk_csr(
            dots.indptr.astype(np.int64), dots.indices.astype(np.int64), sims, topk, min_sim,
            cooc.data, float(min_cooc), *_self_exclusion(ids), r.shape[1])
        parts.append(Neighbors(ids, indptr, nbr, val))
    return Neighbors.concat(parts) if parts else Neighbors.empty()


def gather_columns(alg: paralg, own: sp.spmatrix, items: np.ndarray, prefix: str) -> sp.csc_matrix:
    """The whole rating matrix on every worker, assembled through the parameter server.

    Each worker holds every rating of its ``items`` (columns of ``own``, global shape); it
    writes one ``(2, n)`` array [user ids; ratings] per item under ``prefix/<item>``, and after
    ``sync()`` every worker reads the whole key family back.
    """
    csc = sp.csc_matrix(own, dtype=np.float64)
    csc.sort_indices()
    lo, hi = csc.indptr[items], csc.indptr[items + 1]
    values = [np.vstack([csc.indices[a:b].astype(np.float64), csc.data[a:b]]) for a, b in zip(lo, hi)]
    alg.paracel_write_multi([f"{prefix}/{i}" for i in items.tolist()], values)
    alg.sync()
    table = alg.paracel_read_prefix(f"{prefix}/")
    cols = np.concatenate([np.full(v.shape[1], int(k.rsplit("/", 1)[1])) for k, v in table.items()])
    stacked = np.hstack(list(table.values()))
    return sp.csc_matrix((stacked[1], (stacked[0].astype(np.int64), cols)), shape=csc.shape)


def format_lists(nb: Neighbors) -> dict[int, str]:
    """``item -> "nbr:sim nbr:sim ..."`` (best first, full precision) for ``paracel_dump``."""
    return {int(item): " ".join(f"{j}:{s:.17g}" for j, s in zip(*nb.row(r)))
            for r, item in enumerate(nb.item_ids.tolist())}


class Similarity(paralg):
    """Top-k item neighbours: ``mode="sparse"`` from a ratings file (cosine or Jaccard over the
    item columns), ``mode="dense"`` from an fvec file of item vectors (``id v1 v2 ...``, cosine).

    Workers own items (``fmap`` by item), share them through the servers and score their own
    items against all. ``min_sim`` null keeps every similarity. Writes ``neighbors_<w>.txt``
    (``item<TAB>nbr:sim ...``) and logs the pairs kept.
    """

    def __init__(self, input: str, mode: str = "sparse", measure: str = "cosine", topk: int = 20,
                 min_sim: float | None = None, min_cooc: int = 1, block: int = 512) -> None:
        super().__init__()
        if mode not in ("sparse", "dense") or (mode == "dense" and measure != "cosine"):
            raise ValueError("mode is 'sparse' (cosine/jaccard) or 'dense' (cosine)")
        if measure not in MEASURES or topk < 1 or min_cooc < 1 or block < 1:
            raise ValueError(f"need measure in {MEASURES}, topk >= 1, min_cooc >= 1, block >= 1")
        self.input, self.mode, self.measure, self.topk = input, mode, measure, topk
        self.min_sim = -np.inf if min_sim is None else float(min_sim)
        self.min_cooc, self.block = min_cooc, block
        self.neighbors: Neighbors | None = None

    def solve(self) -> None:
        if self.mode == "sparse":
            from paracel.algorithms.svd import load_ratings_matrix

            own, items = load_ratings_matrix(self, self.input, "item")
            full = gather_columns(self, own, items, "sim/col")
            nb = sparse_topk(items, full, self.topk, self.measure, self.min_sim, self.min_cooc, self.block)
        else:
            nb = self._dense()
        self.neighbors = nb
        self.paracel_dump("neighbors", format_lists(nb))
        items, pairs = self.worker_comm.allreduce(np.array([len(nb.item_ids), len(nb.ids)]))
        if self.get_worker_id() == 0:
            self.log_metrics(0, items=int(items), pairs=int(pairs))

    def _dense(self) -> Neighbors:
        from paracel.loading import load

        data = load(self.input, comm=self.worker_comm, fmt="fvec", shuffle="fmap")
        ids = np.asarray(data["id"], dtype=np.int64)
        self.paracel_write_multi(ids, np.asarray(data["values"], dtype=np.float64))
        self.sync()
        everyone = np.sort(np.concatenate(self.worker_comm.allgather(ids)))
        vectors = np.zeros((everyone.max(initial=-1) + 1, np.asarray(data["values"]).shape[1]))
        vectors[everyone] = self.paracel_read_multi(everyone, as_array=True)
        return dense_topk(np.sort(ids), vectors, self.topk, self.min_sim, self.block)
