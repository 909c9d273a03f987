"""k-means: Lloyd's algorithm from a distributed k-means++ start, sums through the servers.

The points are split across the workers (``paracel_load``). **Start** (k-means++, exact over
all points): the first centre is a point drawn uniformly, each next one a point drawn with
probability proportional to its squared distance to the nearest centre chosen so far. Every
worker draws the same uniform numbers (one seed), so they agree on the point's global position
from the workers' summed weights; its owner broadcasts it. **Rounds**: every worker reads the
centroids from the servers, assigns its points to the nearest one and adds its per-cluster
sums and counts to the servers (``paracel_bupdate_multi``, one key per cluster and round);
after ``sync()`` all read the totals and agree on the new centroids. A cluster left empty is
re-seeded with the point farthest from its centroid (never a division by zero). The job stops
when no point changes cluster, or after ``rounds``; it is bulk-synchronous at any staleness.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np

from paracel import paralg
from paracel.params import InputPath, NonNegativeInt, PositiveInt

def nearest(points: np.ndarray, centroids: np.ndarray,
            sq_norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid, squared distance to it) of every point (ties: the
    smaller index). ``points`` (n, d), ``centroids`` (k >= 1, d); ``sq_norms`` (n,), the
    points' squared norms, if already known."""
    if sq_norms is None:
        sq_norms = np.einsum("ij,ij->i", points, points)
    # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c): the argmin needs only the bracket, one BLAS product
    d2 = points @ (-2.0 * centroids.T)
    d2 += np.einsum("ij,ij->i", centroids, centroids)[None, :]
    label = np.argmin(d2, axis=1)
    return label, np.maximum(d2[np.arange(len(points)), label] + sq_norms, 0.0)


def cluster_sums(points: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    """Rows (k, d + 1): the sum of each cluster's points and, last, their count."""
    member = (label[None, :] == np.arange(k)[:, None]).astype(points.dtype)  # one BLAS product
    return np.hstack([member @ points, member.sum(axis=1)[:, None]])


class KMeans(paralg):
    """k-means of the dense points in ``input``: ``fvec`` lines (``id v1 v2 ...``) or
    ``libsvm`` lines (features made dense; the label is ignored).

    ``k``: clusters; ``rounds``: at most this many Lloyd rounds; ``seed``: the k-means++ draws.
    Writes ``centroids.npy`` and ``initial_centroids.npy`` (worker 0) and ``labels_<w>.txt``
    (``id<TAB>cluster``; libsvm points are numbered by line from 0 per worker), logs the
    inertia (sum of squared distances to the nearest centroid) and the points that moved each
    round. Raises ``ValueError`` if there are fewer points than clusters.
    """

    def __init__(self, input: InputPath, k: PositiveInt = 8, fmt: Literal["fvec", "libsvm"] = "fvec",
                 rounds: PositiveInt = 300, seed: NonNegativeInt = 0) -> None:
        self.input, self.k, self.fmt, self.rounds, self.seed = input, k, fmt, rounds, seed
        self.inertia = float("nan")
        self.centroids: np.ndarray | None = None

    def solve(self) -> None:
        ids, points = self._load()
        total = int(self.allreduce(np.array(len(points), dtype=np.int64)))
        if total < self.k:
            raise ValueError(f"{self.input}: {total} points cannot make {self.k} clusters")
        centroids = self._kmeans_pp(points)
        if self.get_worker_id() == 0:
            np.save(self.output_dir / "initial_centroids.npy", centroids)
        self.set_total_iters(self.rounds)
        label = np.full(len(points), -1)
        sq_norms = np.einsum("ij,ij->i", points, points)
        start = time.perf_counter()
        for rnd in range(self.rounds):
            new_label, d2 = nearest(points, centroids, sq_norms)
            moved = int(self.allreduce(np.array((new_label != label).sum(), dtype=np.int64)))
            self.inertia = float(self.allreduce(d2.sum()))
            label = new_label
            if self.get_worker_id() == 0:
                self.log_metrics(rnd, inertia=self.inertia, moved=moved, seconds=time.perf_counter() - start)
            if moved == 0:
                break
            centroids = self._update(points, label, d2, rnd)
        self.centroids = centroids
        if self.get_worker_id() == 0:
            np.save(self.output_dir / "centroids.npy", centroids)
        self.paracel_dump("labels", dict(zip(ids.tolist(), label.tolist())))

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self.fmt == "fvec":
            table = self.paracel_load(self.input, fmt="fvec")
            return np.asarray(table["id"]), np.ascontiguousarray(table["values"], dtype=np.float64)
        rows = self.paracel_load(self.input, fmt="libsvm")
        return np.arange(len(rows)), rows.X.toarray()

    def _kmeans_pp(self, points: np.ndarray) -> np.ndarray:
        """Exact k-means++ over every worker's points (see the module docstring)."""
        rng = np.random.default_rng(self.seed)  # the same draws on every worker
        centres = np.zeros((0, points.shape[1]))
        d2 = np.full(len(points), np.inf)
        for _ in range(self.k):
            if len(centres):
                d2 = np.minimum(d2, nearest(points, centres[-1:])[1])
            weights = d2 if len(centres) else np.ones(len(points))
            totals = self.allgather_array(np.array([weights.sum()]))
            if totals.sum() <= 0:  # every point is a centre already: draw uniformly
                weights = np.ones(len(points))
                totals = self.allgather_array(np.array([weights.sum()]))
            u = rng.random() * totals.sum()
            owner = min(int(np.searchsorted(np.cumsum(totals), u, side="right")), len(totals) - 1)
            point = None
            if self.get_worker_id() == owner:
                at = np.searchsorted(np.cumsum(weights), u - totals[:owner].sum(), side="right")
                point = points[min(int(at), len(points) - 1)]
            centres = np.vstack([centres, self.bcast(point, root=owner)])
        return centres

    def _update(self, points: np.ndarray, label: np.ndarray, d2: np.ndarray, rnd: int) -> np.ndarray:
        """Collective: the centroids of ``label`` (the same on every worker), from sums and
        counts added on the servers; an empty cluster takes the point farthest from its
        centroid."""
        keys = self._family(rnd)
        self.paracel_bupdate_multi(keys, cluster_sums(points, label, self.k))
        self.sync()
        if rnd and self.get_worker_id() == 0:  # everyone read the last round's sums before this sync
            for key in self._family(rnd - 1).tolist():
                self.paracel_remove(key)
        sums = self.paracel_read_multi(keys, as_array=True)
        counts = sums[:, -1]
        centroids = sums[:, :-1] / np.maximum(counts, 1.0)[:, None]
        for c in np.flatnonzero(counts == 0):  # in the same order on every worker
            far = int(np.argmax(d2)) if len(d2) else -1
            offers = self.allgather((float(d2[far]), self.get_worker_id()) if far >= 0 else (-1.0, -1))
            _, owner = max(offers)
            point = self.bcast(points[far] if self.get_worker_id() == owner else None, root=owner)
            centroids[c] = point
            if self.get_worker_id() == owner:
                d2[far] = 0.0  # a centre now: not offered again
        return centroids

    def _family(self, rnd: int) -> np.ndarray:
        """The keys (int64) of round ``rnd``'s per-cluster sums."""
        return np.arange(self.k, dtype=np.int64) + rnd * self.k
