"""A worker's SSP read cache: the values it has read, as table rows with a clock stamp each.

Values live in the same structure as a server's shard (``ShardTable``: rows of one signature in
one contiguous block, a C++ key index), plus one stamp per row: the clock that every worker had
reached when the value was read (so it holds every update stamped before it). A read that the
staleness bound allows is then one index lookup and one ``np.take`` per block.
"""
from __future__ import annotations

import numpy as np

from paracel.batch import KeyBatch, ValueBatch
from paracel.table import ROW_BITS, ROW_MASK, ShardTable

#: The stamp of a row that must not be served (its key was written by this worker since).
STALE = -(1 << 62)
#: A cache of at least this many rows is emptied at a commit once most of its rows are stale.
COMPACT_FROM = 4096


class ReadCache:
    """Cached values of keys, each fresh from a clock; counts its hits and misses."""

    def __init__(self) -> None:
        self.table = ShardTable()
        self.stamps: list[np.ndarray] = []  # per block: the stamp of each row
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.table)

    def clear(self) -> None:
        """Forget everything (the hit and miss counts stay)."""
        self.table = ShardTable()
        self.stamps = []

    def slots(self, keys: KeyBatch) -> np.ndarray:
        """The slot of every key (``block << ROW_BITS | row``; -1 where not cached)."""
        return self.table.lookup(keys)

    def stamps_at(self, slots: np.ndarray) -> np.ndarray:
        """The stamp of every slot: the clock its value is fresh from (``STALE`` where not cached)."""
        bids = slots >> ROW_BITS  # -1 where absent
        top = int(bids.max()) if len(bids) else -1
        if top < 0:
            return np.full(len(slots), STALE, dtype=np.int64)
        if int(bids.min()) == top:  # the usual hit: every slot in one block, one gather
            return np.take(self.stamps[top], slots & ROW_MASK)
        present = slots >= 0
        stamps = np.full(len(slots), STALE, dtype=np.int64)
        for bid in np.unique(bids[present]).tolist():
            at = np.flatnonzero(bids == bid)
            stamps[at] = self.stamps[bid][slots[at] & ROW_MASK]
        return stamps

    def values(self, slots: np.ndarray) -> ValueBatch:
        """Copies of the values at ``slots`` (all cached), in that order."""
        bids = slots >> ROW_BITS
        if len(slots) and int(bids.min()) == int(bids.max()):
            block = self.table.blocks[int(bids[0])]
            return ValueBatch(dense=np.take(block.data, slots & ROW_MASK, axis=0), py=block.py)
        return ValueBatch(ragged=[(self.table.blocks[s >> ROW_BITS].data[s & ROW_MASK].copy(),
                                   self.table.blocks[s >> ROW_BITS].py) for s in slots.tolist()])

    def store(self, keys: KeyBatch, values: ValueBatch, stamp: int) -> None:
        """Cache copies of ``values`` under ``keys``, fresh from clock ``stamp``."""
        self._stamp(self.table.write(keys, values), stamp)

    def forget(self, keys: KeyBatch) -> None:
        """Never serve ``keys`` again until they are read anew (read-my-writes)."""
        if len(self.table):
            slots = self.table.lookup(keys)
            self._stamp(slots[slots >= 0], STALE)

    def compact(self, since: int) -> None:
        """Empty a cache of ``COMPACT_FROM`` rows or more once most of its rows were last read
        before clock ``since - 1`` (read neither in the clock just ended nor later), so it does
        not grow with every key ever read; a worker that re-reads its keys every clock keeps
        them (their stamps are at least ``since - 1``)."""
        rows = sum(block.size for block in self.table.blocks)
        if rows < COMPACT_FROM:
            return
        recent = sum(int(np.count_nonzero(stamps[:block.size] >= since - 1))
                     for block, stamps in zip(self.table.blocks, self.stamps))
        if 2 * recent < rows:
            self.clear()

    def _stamp(self, slots: np.ndarray, stamp: int) -> None:
        """Set the stamp of every slot (all cached)."""
        if not len(slots):
            return
        bids = slots >> ROW_BITS
        top = int(bids.max())
        for bid in [top] if int(bids.min()) == top else np.unique(bids).tolist():
            size = self.table.blocks[bid].size
            while len(self.stamps) <= bid:
                self.stamps.append(np.full(0, STALE, dtype=np.int64))
            if len(self.stamps[bid]) < size:
                grown = np.full(max(2 * len(self.stamps[bid]), size), STALE, dtype=np.int64)
                grown[:len(self.stamps[bid])] = self.stamps[bid]
                self.stamps[bid] = grown
            rows = slots & ROW_MASK if bid == top and int(bids.min()) == top else slots[bids == bid] & ROW_MASK
            self.stamps[bid][rows] = stamp
