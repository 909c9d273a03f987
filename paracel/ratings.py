"""Rating triples (``user item rating [time]`` lines), the shape recommendation algorithms share.

A worker's ``Ratings`` keep the raw ids of the input. Algorithms index them two ways: as local
rows of id tables (``id_maps`` and ``local_indices``, for kernels over dense row blocks) or
directly by raw id (``matrix``: a users x items CSR matrix whose shape is the same on every
worker).

Loading, collectives (MPI) and scipy are imported where they are used: the launcher imports an
algorithm module, and so this one, only to check its config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp
    from mpi4py import MPI

    from paracel.loading import IdMap, Table

Owner = Literal["user", "item"]


@dataclass(frozen=True)
class RatingStats:
    """The ``count``, ``mean`` and range ``[lo, hi]`` of the ratings of every worker (mean, lo
    and hi are NaN when there are none)."""

    count: int
    mean: float
    lo: float
    hi: float


NO_RATINGS = RatingStats(0, np.nan, np.nan, np.nan)


@dataclass
class Ratings:
    """One worker's ratings: raw ``users`` and ``items`` ids (int64), ``values`` (float64).

    ``shape`` is (max user id + 1, max item id + 1) and ``stats`` the count, mean and range,
    both over the ratings of every worker loaded in the same call.
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]
    stats: RatingStats

    @classmethod
    def empty(cls) -> "Ratings":
        """No ratings (e.g. no test file)."""
        none = np.zeros(0, np.int64)
        return cls(none, none, np.zeros(0), (0, 0), NO_RATINGS)

    def __len__(self) -> int:
        return len(self.values)

    def id_maps(self, *others: "Ratings") -> tuple[IdMap, IdMap]:
        """The maps of every user id and every item id of these ratings and ``others``."""
        from paracel.loading import IdMap

        everyone = (self, *others)
        return IdMap.build(*(r.users for r in everyone)), IdMap.build(*(r.items for r in everyone))

    def local_indices(self, users: IdMap, items: IdMap) -> tuple[np.ndarray, np.ndarray]:
        """Each rating's row in ``users`` and in ``items`` (int32, as the kernels take them);
        raises ``KeyError`` if a map lacks one of the ids."""
        return users.to_local(self.users).astype(np.int32), items.to_local(self.items).astype(np.int32)

    def matrix(self, shape: tuple[int, int] | None = None) -> sp.csr_matrix:
        """The ratings as a CSR float64 matrix indexed by raw (user, item) ids, duplicates
        summed; of shape ``shape`` (default ``self.shape``)."""
        import scipy.sparse as sp

        out = sp.csr_matrix((self.values, (self.users, self.items)), shape=shape or self.shape)
        out.sum_duplicates()
        return out

    def write_predictions(self, path: Path, predictions: np.ndarray) -> None:
        """Write ``user<TAB>item<TAB>rating<TAB>prediction`` lines, one per rating."""
        with open(path, "w", encoding="utf-8") as out:
            for u, i, r, p in zip(self.users.tolist(), self.items.tolist(), self.values.tolist(),
                                  predictions.tolist()):
                out.write(f"{u}\t{i}\t{r:g}\t{p:.6f}\n")


def load_ratings(pattern: Any, comm: MPI.Intracomm, by: Owner = "user") -> Ratings:
    """Collective: this worker's share of the ratings in ``pattern`` (as ``paracel.loading.load``
    takes it), every rating of a user (``by="user"``, Paracel's fmap) or of an item
    (``by="item"``) on one worker."""
    from paracel.loading import load

    if by not in ("user", "item"):
        raise ValueError(f"by must be 'user' or 'item', not {by!r}")
    return _ratings(load(pattern, comm=comm, fmt="ratings", shuffle="fmap", row_key=by), comm)


def loadall_ratings(pattern: Any, comm: MPI.Intracomm) -> Ratings:
    """Collective: every rating in ``pattern``, on every worker."""
    from paracel.loading import loadall

    return _ratings(loadall(pattern, comm=comm, fmt="ratings"), comm, summed=False)


def _ratings(table: Table, comm: MPI.Intracomm, summed: bool = True) -> Ratings:
    """Ratings of a loaded table, with shape and stats over every worker's table (``summed``)
    or over this worker's (every worker read the same)."""
    from paracel import collectives

    users, items, values = table["user"], table["item"], table["rating"]
    last_ids = np.array([users.max(initial=-1), items.max(initial=-1)])
    range_ = np.array([values.max(initial=-np.inf), -values.min(initial=np.inf)])
    totals = np.array([values.sum(), len(values)])
    if summed:
        last_ids = collectives.allreduce(comm, last_ids, "max")
        range_ = collectives.allreduce(comm, range_, "max")
        totals = collectives.allreduce(comm, totals)
    count = int(totals[1])
    stats = (RatingStats(count, float(totals[0] / count), float(-range_[1]), float(range_[0]))
             if count else NO_RATINGS)
    return Ratings(users, items, values, (int(last_ids[0]) + 1, int(last_ids[1]) + 1), stats)
