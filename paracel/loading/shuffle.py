"""Shuffle by key (Paracel's fmap/smap/fsmap): send each record to the worker owning its key.

Owners come from the same deterministic 64-bit hash as the key ring (``paracel._ext.hashing``),
so every rank computes the same owner for a key:

- ``fmap``: owner = hash(row key) % W;
- ``smap``: owner = hash(col key) % W;
- ``fsmap``: the W workers form a grid of R x C (R the largest divisor of W not above sqrt(W));
  owner = (hash(row) % R) * C + hash(col) % C, so one worker holds one block of the matrix.

Records move with one buffer-based ``Ialltoallv`` per column (numpy buffers, no pickling),
waited for without spinning.
Received records are ordered by source rank, then by their order there.
"""
from __future__ import annotations

import math

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from paracel._ext.hashing import hash_int_keys
from paracel.collectives import wait

MODES = ("fmap", "smap", "fsmap")


def key_hash(keys: np.ndarray) -> np.ndarray:
    """uint64 hash of int64 keys (the key ring's hash)."""
    return hash_int_keys(np.ascontiguousarray(keys, dtype=np.int64))


def grid(size: int) -> tuple[int, int]:
    """(rows, cols) of the fsmap worker grid: rows * cols == size, rows <= cols, most square."""
    rows = max(r for r in range(1, math.isqrt(size) + 1) if size % r == 0)
    return rows, size // rows


def owners(mode: str, size: int, row: np.ndarray | None, col: np.ndarray | None) -> np.ndarray:
    """Owner rank (int64) of each record for ``mode`` among ``size`` workers."""
    if mode not in MODES:
        raise ValueError(f"shuffle must be one of {MODES} or None, not {mode!r}")
    need = {"fmap": (row,), "smap": (col,), "fsmap": (row, col)}[mode]
    if any(k is None for k in need):
        raise ValueError(f"shuffle {mode!r} needs a {'row' if row is None else 'column'} key")
    if mode == "fmap":
        return (key_hash(row) % np.uint64(size)).astype(np.int64)
    if mode == "smap":
        return (key_hash(col) % np.uint64(size)).astype(np.int64)
    r, c = grid(size)
    return ((key_hash(row) % np.uint64(r)) * np.uint64(c)
            + key_hash(col) % np.uint64(c)).astype(np.int64)


def exchange(columns: dict[str, np.ndarray], dest: np.ndarray,
             comm: MPI.Intracomm) -> dict[str, np.ndarray]:
    """Collective: row i of every column goes to worker ``dest[i]``; returns the received rows.

    Every worker must pass the same column names with the same dtypes and trailing shapes.
    """
    size = comm.Get_size()
    order = np.argsort(dest, kind="stable")
    send_counts = np.bincount(dest, minlength=size).astype(np.int64)
    recv_counts = np.empty(size, dtype=np.int64)
    wait(comm.Ialltoall(send_counts, recv_counts))
    out = {}
    for name, col in columns.items():
        width = math.prod(col.shape[1:])
        send = np.ascontiguousarray(col[order])
        recv = np.empty((int(recv_counts.sum()),) + col.shape[1:], dtype=col.dtype)
        out[name] = recv
        if width == 0:
            continue
        dtype = from_numpy_dtype(col.dtype)
        sc, rc = send_counts * width, recv_counts * width
        wait(comm.Ialltoallv([send, (sc, _displs(sc)), dtype], [recv, (rc, _displs(rc)), dtype]))
    return out


def _displs(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def shuffle_table(columns: dict[str, np.ndarray], mode: str, row_key: str | None,
                  col_key: str | None, comm: MPI.Intracomm) -> dict[str, np.ndarray]:
    """Collective: the table's rows moved to their owners under ``mode`` (see module doc)."""
    for key in (row_key, col_key):
        if key is not None and key not in columns:
            raise ValueError(f"shuffle key {key!r} is not a column (have {list(columns)})")
        if key is not None and columns[key].dtype.kind not in "iu":
            raise ValueError(f"shuffle key {key!r} must be an integer column")
    dest = owners(mode, comm.Get_size(), columns.get(row_key) if row_key else None,
                  columns.get(col_key) if col_key else None)
    return exchange(columns, dest, comm)
