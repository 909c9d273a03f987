"""Consistent-hash ring that places keys on servers (virtual nodes, deterministic everywhere)."""
from __future__ import annotations

import numpy as np

from paracel._ext.hashing import hash_str_keys, ring_starts, route
from paracel.batch import KeyBatch

DEFAULT_VNODES = 256
#: Up to this many servers, ``split`` groups keys with one pass per server.
FEW_SERVERS = 8


class KeyRing:
    """Routes keys to ``nservers`` servers; each server owns ``vnodes`` points on a 64-bit ring.

    A key belongs to the server owning the first ring point at or after the key's hash. The
    points are hashes of ``"server-<i>#<v>"``, so every process builds the same ring.
    """

    def __init__(self, nservers: int, vnodes: int = DEFAULT_VNODES) -> None:
        if not 1 <= nservers < 2**15:
            raise ValueError(f"a ring needs 1 to {2**15 - 1} servers, got {nservers}")
        self.nservers = nservers
        points = hash_str_keys([f"server-{s}#{v}" for s in range(nservers) for v in range(vnodes)])
        owners = np.repeat(np.arange(nservers, dtype=np.int32), vnodes)
        order = np.argsort(points, kind="stable")
        self._points = np.ascontiguousarray(points[order])
        self._owners = np.ascontiguousarray(owners[order])
        self._starts = ring_starts(self._points)

    def route(self, keys: KeyBatch) -> np.ndarray:
        """Server index (0 .. nservers-1) of every key, as an int32 array."""
        if self.nservers == 1:
            return np.zeros(len(keys), dtype=np.int32)
        return route(keys.hashes(), self._points, self._owners, self._starts)

    def split(self, keys: KeyBatch) -> list[tuple[int, np.ndarray]]:
        """Group key positions by server: ``[(server, positions), ...]`` for servers involved."""
        owners = self.route(keys)
        if len(owners) and (owners == owners[0]).all():
            return [(int(owners[0]), np.arange(len(owners)))]
        if self.nservers <= FEW_SERVERS:  # one pass per server beats any sort
            groups = [(s, np.flatnonzero(owners == s)) for s in range(self.nservers)]
            return [(s, where) for s, where in groups if len(where)]
        order = np.argsort(owners.astype(np.int16), kind="stable")  # a radix sort
        counts = np.bincount(owners, minlength=self.nservers)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [(s, order[bounds[s]:bounds[s + 1]]) for s in range(self.nservers) if counts[s]]
