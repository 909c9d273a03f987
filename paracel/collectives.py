"""Collectives over the workers that wait without spinning a core.

A blocking MPI collective (``Allreduce``, pickled ``allreduce``...) spins at 100% of a core
until the slowest worker arrives, and a paracel job runs more ranks than the machine has cores:
that CPU is taken from the servers. Every function here posts MPI's non-blocking collective
(``Iallreduce``, ``Iallgatherv``, ``Igatherv``, ``Ibcast``) on numpy buffers and polls it with
``Test`` and ``paracel.waiting.Backoff``. Python objects are pickled to bytes only in the
object variants (``gather``, ``bcast``, ``allgather``).

Every function is collective: each worker of ``comm`` must call it, in the same order.
"""
from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from paracel.waiting import Backoff

if TYPE_CHECKING:
    import scipy.sparse as sp

ReduceOp = Literal["sum", "min", "max"]
_OPS = {"sum": MPI.SUM, "min": MPI.MIN, "max": MPI.MAX}


def wait(*requests: MPI.Request) -> None:
    """Return once every request has completed, polling with back-off (never spinning)."""
    if MPI.Request.Testall(requests):
        return
    backoff = Backoff()
    while not MPI.Request.Testall(requests):
        backoff.pause()


def allreduce(comm: MPI.Intracomm, values: Any, op: ReduceOp = "sum") -> np.ndarray:
    """Element-wise ``op`` of every worker's ``values`` (a numeric array or number).

    Every worker passes the same shape and dtype; the result has them too (a number comes back
    as a 0-d array) and is the same, bit for bit, on every worker. Raises ``ValueError`` for an
    unknown ``op``, ``TypeError`` for a dtype that is not numeric (complex: sum only).
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, not {op!r}")
    send = np.asarray(values, order="C")
    if send.dtype.kind not in ("iufc" if op == "sum" else "iuf"):
        raise TypeError(f"allreduce {op} needs a numeric array, not {send.dtype}")
    out = np.empty_like(send)
    if op == "sum" and send.dtype.kind in "fc" and comm.Get_size() > 2:
        # Float addition is not associative and MPI may add in a different order on each
        # worker; summing on one and broadcasting gives all the same bits, which algorithms
        # that branch on a sum in lockstep (SVD's convergence test, a tree's splits) rely on.
        wait(comm.Ireduce(send, out, op=MPI.SUM, root=0))
        wait(comm.Ibcast(out, root=0))
    else:
        wait(comm.Iallreduce(send, out, op=_OPS[op]))
    return out


def allgather_array(comm: MPI.Intracomm, rows: Any) -> np.ndarray:
    """Every worker's ``rows`` concatenated along axis 0, in worker order.

    ``rows`` is an array of shape ``(n_w, *shape)``; ``n_w`` may differ (and be 0) between
    workers, the dtype and ``shape`` may not. Raises ``ValueError`` for a 0-d ``rows``.
    """
    rows = np.asarray(rows, order="C")
    if rows.ndim == 0:
        raise ValueError("allgather_array needs rows (an array of at least one dimension)")
    return _allgatherv(comm, [rows])[0]


def union_ids(comm: MPI.Intracomm, ids: Any) -> np.ndarray:
    """Sorted unique int64 ids held by any worker (``ids``: any int array, any shape)."""
    local = np.unique(np.asarray(ids, dtype=np.int64))
    return np.unique(allgather_array(comm, local))


def allreduce_sparse(comm: MPI.Intracomm, matrix: sp.spmatrix) -> sp.csr_matrix:
    """Element-wise sum of every worker's sparse ``matrix`` as CSR (duplicates summed).

    Every worker passes the same shape and value dtype. With disjoint entries (e.g. each
    worker's own rows or columns) the sum is the whole matrix assembled on every worker.
    """
    import scipy.sparse as sp  # here: most jobs never need scipy (0.1 s per rank to import)
    coo = sp.coo_matrix(matrix)
    rows, cols, data = _allgatherv(comm, [coo.row.astype(np.int64), coo.col.astype(np.int64),
                                          np.ascontiguousarray(coo.data)])
    whole = sp.csr_matrix((data, (rows, cols)), shape=coo.shape)
    whole.sum_duplicates()
    return whole


def gather(comm: MPI.Intracomm, obj: Any, root: int = 0) -> list[Any] | None:
    """Every worker's (picklable) ``obj``, in worker order, on ``root``; None elsewhere."""
    payload = _pickled(obj)
    size = np.array([payload.size], dtype=np.int64)
    if comm.Get_rank() != root:
        wait(comm.Igather(size, None, root=root))
        wait(comm.Igatherv(payload, None, root=root))
        return None
    sizes = np.empty(comm.Get_size(), dtype=np.int64)
    wait(comm.Igather(size, sizes, root=root))
    received = np.empty(int(sizes.sum()), dtype=np.uint8)
    wait(comm.Igatherv(payload, [received, (sizes, _displacements(sizes)), MPI.BYTE], root=root))
    return _unpickled(received, sizes)


def bcast(comm: MPI.Intracomm, obj: Any, root: int = 0) -> Any:
    """``root``'s (picklable) ``obj`` on every worker (``root`` gets its own object back)."""
    is_root = comm.Get_rank() == root
    payload = _pickled(obj) if is_root else None
    size = np.array([payload.size if is_root else 0], dtype=np.int64)
    wait(comm.Ibcast(size, root=root))
    if not is_root:
        payload = np.empty(int(size[0]), dtype=np.uint8)
    wait(comm.Ibcast(payload, root=root))
    return obj if is_root else pickle.loads(payload)


def allgather(comm: MPI.Intracomm, obj: Any) -> list[Any]:
    """Every worker's (picklable) ``obj``, in worker order, on every worker."""
    payload = _pickled(obj)
    sizes = _sizes(comm, payload.size)
    received = np.empty(int(sizes.sum()), dtype=np.uint8)
    wait(comm.Iallgatherv(payload, [received, (sizes, _displacements(sizes)), MPI.BYTE]))
    return _unpickled(received, sizes)


def _sizes(comm: MPI.Intracomm, n: int) -> np.ndarray:
    """Every worker's ``n`` (int64, in worker order)."""
    sizes = np.empty(comm.Get_size(), dtype=np.int64)
    wait(comm.Iallgather(np.array([n], dtype=np.int64), sizes))
    return sizes


def _allgatherv(comm: MPI.Intracomm, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``allgather_array`` of several C-contiguous arrays with the same row count, posted
    together after one exchange of the counts."""
    counts = _sizes(comm, len(arrays[0]))
    outs, requests = [], []
    for rows in arrays:
        out = np.empty((int(counts.sum()), *rows.shape[1:]), dtype=rows.dtype)
        outs.append(out)
        width = int(np.prod(rows.shape[1:], dtype=np.int64))
        if width == 0 or out.size == 0:
            continue
        elements = counts * width
        requests.append(comm.Iallgatherv([rows, from_numpy_dtype(rows.dtype)],
                                         [out, (elements, _displacements(elements)),
                                          from_numpy_dtype(rows.dtype)]))
    wait(*requests)
    return outs


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def _pickled(obj: Any) -> np.ndarray:
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)


def _unpickled(received: np.ndarray, sizes: np.ndarray) -> list[Any]:
    ends = np.cumsum(sizes)
    return [pickle.loads(received[end - size:end]) for size, end in zip(sizes.tolist(), ends.tolist())]
