"""One server's shard of the key-value table.

Values of one signature (dtype, shape, how given) live as rows of one contiguous numpy
block; a C++ key index (csrc/keyindex.pyx) maps each key to its slot ``block << 40 | row``.
Batches are read, written and updated with whole-array numpy operations; only user-defined
update functions and mixed-signature batches go key by key.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from paracel._ext.keyindex import KeyIndex
from paracel.batch import INT_KEYS, KeyBatch, Signature, ValueBatch, as_value, from_array
from paracel.errors import RemoteKeyError
from paracel.updates import BUILTIN_UFUNCS, REPLACE, resolve

ROW_BITS = 40
ROW_MASK = (1 << ROW_BITS) - 1


class Block:
    """Rows of values sharing one signature, in one array that grows fourfold when full.

    Growing copies the rows into fresh memory, whose every page the kernel maps on first write,
    at a cost above the copy's own; the unused tail of a grown array costs nothing until rows
    are written there. Fourfold growth copies a third of the final rows where doubling copies
    all of them.
    """

    def __init__(self, signature: Signature) -> None:
        dtype, shape, self.py = signature
        self.data = np.empty((16, *shape), dtype=dtype)
        self.size = 0
        self.free: list[int] = []

    def alloc(self, n: int) -> np.ndarray:
        """``n`` unused row numbers (reusing freed rows first)."""
        reused = self.free[len(self.free) - min(n, len(self.free)):]
        del self.free[len(self.free) - len(reused):]
        fresh = n - len(reused)
        if self.size + fresh > len(self.data):
            grown = np.empty((max(4 * len(self.data), self.size + fresh), *self.data.shape[1:]), self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        rows = np.concatenate([np.array(reused, dtype=np.int64), np.arange(self.size, self.size + fresh)])
        self.size += fresh
        return rows

    def release(self, rows: np.ndarray) -> None:
        self.free.extend(rows.tolist())


class ShardTable:
    """One server's shard of the key-value table: the operations behind its request handlers."""

    def __init__(self) -> None:
        self.index = KeyIndex()
        self.blocks: list[Block] = []
        self._block_ids: dict[tuple[str, tuple[int, ...], int], int] = {}

    def __len__(self) -> int:
        return len(self.index)

    # -- index
    def lookup(self, keys: KeyBatch) -> np.ndarray:
        """The slot of every key (``block << ROW_BITS | row``; -1 where absent)."""
        if keys.kind == INT_KEYS:
            return self.index.get_ints(keys.ints)
        return self.index.get_strs(keys.blob, keys.offsets)

    def _set_slots(self, keys: KeyBatch, slots: np.ndarray) -> int:
        """Map ``keys`` to ``slots``; returns how many keys were new."""
        if keys.kind == INT_KEYS:
            return self.index.set_ints(keys.ints, slots)
        return self.index.set_strs(keys.blob, keys.offsets, slots)

    def _block_id(self, dtype: np.dtype, shape: tuple[int, ...], py: int) -> int:
        sig = (dtype.str if not dtype.fields else str(dtype.descr), tuple(shape), py)
        bid = self._block_ids.get(sig)
        if bid is None:
            bid = self._block_ids[sig] = len(self.blocks)
            self.blocks.append(Block((dtype, tuple(shape), py)))
        return bid

    def _release(self, slots: np.ndarray) -> None:
        """Free the rows at ``slots`` (repeats allowed)."""
        if not len(slots):
            return
        slots = np.unique(slots)
        bids = slots >> ROW_BITS
        for bid in np.unique(bids).tolist():
            self.blocks[bid].release(slots[bids == bid] & ROW_MASK)

    def _place(self, keys: KeyBatch, bid: int, slots: np.ndarray) -> np.ndarray:
        """Make every key live in block ``bid``; returns each key's row there.

        Keys elsewhere are moved out of their old block (their old value is dropped).
        """
        outside = (slots < 0) | ((slots >> ROW_BITS) != bid)
        if not outside.any():
            return slots & ROW_MASK
        self._release(slots[outside & (slots >= 0)])
        block = self.blocks[bid]
        where = np.flatnonzero(outside)
        rows = block.alloc(len(where))
        added = self._set_slots(keys if len(where) == len(keys) else keys.take(where), (bid << ROW_BITS) | rows)
        if added == len(where):  # every key placed was new and given once: its row is final
            final = slots & ROW_MASK
            final[where] = rows
            return final
        # a key given twice got two rows and kept the last: free the others
        final = self.lookup(keys)
        kept = final[where] & ROW_MASK
        if not np.array_equal(kept, rows):
            block.release(np.setdiff1d(rows, kept))
        return final & ROW_MASK

    # -- operations
    def read(self, keys: KeyBatch) -> ValueBatch:
        """The values of ``keys``; raises ``RemoteKeyError`` naming any absent key.

        A single key's value is a view of the table: valid until the table next changes.
        """
        slots = self.lookup(keys)
        missing = slots < 0
        if missing.any():
            absent = keys.take(np.flatnonzero(missing))
            raise RemoteKeyError(f"no such key{'s' if len(absent) > 1 else ''}: {absent.describe()}")
        return self._values_at(slots)

    def _values_at(self, slots: np.ndarray) -> ValueBatch:
        """The values at ``slots`` (of present keys; at least one); see ``read``."""
        bids = slots >> ROW_BITS
        if len(slots) and (bids == bids[0]).all():
            block = self.blocks[int(bids[0])]
            if len(slots) == 1:  # a view, not a copy: one key may hold a large array
                row = int(slots[0]) & ROW_MASK
                return ValueBatch(dense=block.data[row:row + 1], py=block.py)
            return ValueBatch(dense=np.take(block.data, slots & ROW_MASK, axis=0), py=block.py)
        return ValueBatch(ragged=[self._value_at(s) for s in slots.tolist()])

    def _value_at(self, slot: int) -> tuple[np.ndarray, int]:
        block = self.blocks[slot >> ROW_BITS]
        return block.data[slot & ROW_MASK].copy(), block.py

    def row_bytes(self, keys: KeyBatch, signature: Signature) -> np.ndarray | None:
        """The bytes of the one key's row if it already holds a value of this signature (so a
        new value can be received straight into the table, see ``write``), else None."""
        slot = int(self.lookup(keys)[0])
        if slot < 0 or (slot >> ROW_BITS) != self._block_id(*signature):
            return None
        row = slot & ROW_MASK
        return self.blocks[slot >> ROW_BITS].data[row:row + 1].reshape(-1).view(np.uint8)  # a view, also of 0-d rows

    def _is_row_at(self, slot: int, values: ValueBatch) -> bool:
        """Whether the one dense value is the row at ``slot`` itself, as stored (received there)."""
        if slot < 0:
            return False
        block, dense = self.blocks[slot >> ROW_BITS], values.dense
        if dense.base is not block.data or values.py != block.py:
            return False
        row = slot & ROW_MASK
        return (dense.dtype == block.data.dtype and dense.shape[1:] == block.data.shape[1:]
                and dense.ctypes.data == block.data[row:].ctypes.data)

    def write(self, keys: KeyBatch, values: ValueBatch) -> np.ndarray:
        """Store ``values`` under ``keys`` (the last wins where a key repeats); returns the slot
        of every key.

        A value received into its key's row (``row_bytes``) is already stored: no copy is made.
        """
        if values.dense is None:
            for i in range(len(keys)):
                arr, py = values.item(i)
                self.write(keys.take(np.array([i])), ValueBatch(dense=arr[None], py=py))
            return self.lookup(keys)
        slots = self.lookup(keys)
        if len(slots) == 1 and self._is_row_at(int(slots[0]), values):
            return slots
        bid = self._block_id(values.dense.dtype, values.dense.shape[1:], values.py)
        rows = self._place(keys, bid, slots)
        self.blocks[bid].data[_run(rows)] = values.dense
        return (bid << ROW_BITS) | rows

    def update(self, keys: KeyBatch, deltas: ValueBatch, fn_name: str) -> None:
        """Apply ``new = fn(old, delta)`` per key in order; an absent key stores its delta.

        Built-in functions but ``replace`` keep each stored value's dtype, shape and type: a
        delta must have the stored shape and a dtype numpy casts to the stored one as
        ``same_kind`` (int onto float, float64 onto float32: yes; float onto int: no); else
        ``TypeError``/``ValueError`` naming the key, and nothing in the batch is changed.
        ``replace`` stores the delta as given, like a write. Raises ``ValueError`` for an unknown
        function; a failing user function's exception propagates after the keys before it
        were updated.
        """
        fn = resolve(fn_name)
        if fn_name == REPLACE:
            self.write(keys, deltas)
        elif fn_name not in BUILTIN_UFUNCS:
            self._update_each(keys, deltas, fn)
        elif deltas.dense is None:  # rare: deltas of several signatures, applied key by key
            items = [deltas.item(i) for i in range(len(keys))]
            ones = [(keys.take(np.array([i])), ValueBatch(dense=arr[None], py=py)) for i, (arr, py) in enumerate(items)]
            for key, delta in ones:
                self._check_deltas(key, delta, self.lookup(key), fn_name)
            for key, delta in ones:
                self._apply(key, delta, fn_name)
        else:
            self._apply(keys, deltas, fn_name)

    def _apply(self, keys: KeyBatch, deltas: ValueBatch, fn_name: str) -> None:
        """``update`` of dense deltas with a built-in ufunc: one vector operation per block."""
        slots = self.lookup(keys)
        blocks = self._check_deltas(keys, deltas, slots, fn_name)
        missing = np.flatnonzero(slots < 0)
        apply = np.ones(len(keys), dtype=bool)
        if len(missing):
            bid = self._block_id(deltas.dense.dtype, deltas.dense.shape[1:], deltas.py)
            rows = self._place(keys.take(missing), bid, slots[missing])
            if _distinct(rows, self.blocks[bid].size):
                first = slice(None)
            else:  # a new key given twice stores its first delta; the next ones are applied
                first = np.unique(rows, return_index=True)[1]
            self.blocks[bid].data[rows[first]] = deltas.dense[missing[first]]
            apply[missing[first]] = False
            slots[missing] = (bid << ROW_BITS) | rows
            blocks = sorted({*blocks, bid})
        ufunc = BUILTIN_UFUNCS[fn_name]
        every = len(blocks) == 1 and not len(missing)  # the usual case: no mask, no copy of the deltas
        for bid in blocks:
            chosen = apply & ((slots >> ROW_BITS) == bid) if len(blocks) > 1 else apply
            block = self.blocks[bid]
            data = block.data  # only now: placing new keys may have grown the block
            rows = (slots if every else slots[chosen]) & ROW_MASK
            d = deltas.dense if every else deltas.dense[chosen]
            run = _run(rows)
            if isinstance(run, slice):  # one increasing run of rows: in place, no gather
                ufunc(data[run], d, out=data[run], casting="same_kind")
            elif _distinct(rows, block.size):
                current = np.take(data, rows, axis=0)
                data[rows] = ufunc(current, d, out=current, casting="same_kind")
            else:
                ufunc.at(data, rows, d.astype(data.dtype, casting="same_kind", copy=False))

    def _check_deltas(self, keys: KeyBatch, deltas: ValueBatch, slots: np.ndarray, fn_name: str) -> list[int]:
        """Refuse dense ``deltas`` that would change the dtype or shape of a stored value;
        returns the blocks that hold the present keys (``slots``)."""
        bids = slots >> ROW_BITS  # -1 where absent
        top = int(bids.max()) if len(bids) else -1
        if top < 0:
            blocks = []
        elif ((bids == top) | (bids < 0)).all():  # the usual case: one block, no sort
            blocks = [top]
        else:
            blocks = np.unique(bids[bids >= 0]).tolist()
        for bid in blocks:
            self._check_block(bid, keys, deltas, bids, fn_name)
        return blocks

    def _check_block(self, bid: int, keys: KeyBatch, deltas: ValueBatch, bids: np.ndarray, fn_name: str) -> None:
        stored, delta = self.blocks[bid].data, deltas.dense
        if delta.shape[1:] == stored.shape[1:] and np.can_cast(delta.dtype, stored.dtype, casting="same_kind"):
            return
        key = keys.take(np.flatnonzero(bids == bid)[:1]).describe()
        if delta.shape[1:] != stored.shape[1:]:
            raise ValueError(f"update {fn_name!r} of key {key}: a delta of shape {delta.shape[1:]} cannot change "
                             f"the stored value's shape {stored.shape[1:]}")
        raise TypeError(f"update {fn_name!r} of key {key}: a {delta.dtype} delta cannot change the stored "
                        f"{stored.dtype} value (numpy casts 'same_kind' only; cast the delta first)")

    def _update_each(self, keys: KeyBatch, deltas: ValueBatch, fn: Any) -> None:
        for i in range(len(keys)):
            key = keys.take(np.array([i]))
            slot = int(self.lookup(key)[0])
            delta_arr, delta_py = deltas.item(i)
            if slot < 0:
                self.write(key, ValueBatch(dense=np.asarray(delta_arr)[None], py=delta_py))
                continue
            old = from_array(*self._value_at(slot))
            arr, py = as_value(fn(old, from_array(delta_arr, delta_py)))
            self.write(key, ValueBatch(dense=np.asarray(arr)[None], py=py))

    def remove(self, keys: KeyBatch) -> int:
        """Delete ``keys``; returns how many were present."""
        slots = self.lookup(keys)
        present = np.unique(slots[slots >= 0])
        self._release(present)
        if keys.kind == INT_KEYS:
            self.index.del_ints(keys.ints)
        else:
            self.index.del_strs(keys.blob, keys.offsets)
        return len(present)

    def contains(self, keys: KeyBatch) -> np.ndarray:
        """Bool array: which keys are present."""
        return self.lookup(keys) >= 0

    def items(self, kind: str, prefix: str | None = None) -> tuple[KeyBatch, ValueBatch]:
        """Every key of ``kind`` (``INT_KEYS`` or ``STR_KEYS``; str keys filtered by ``prefix``)
        and its value."""
        if kind == INT_KEYS:
            ints, slots = self.index.int_items()
            keys = KeyBatch(ints=ints)
        else:
            blob, offsets, slots = self.index.str_items((prefix or "").encode("utf-8"))
            keys = KeyBatch(blob=blob, offsets=offsets)
        if len(keys) == 0:
            return keys, ValueBatch(ragged=[])
        return keys, self._values_at(slots)

    def topk(self, k: int, kind: str, prefix: str | None = None) -> tuple[KeyBatch, ValueBatch]:
        """The ``k`` keys with the largest scalar numeric values (ties: smaller key first)."""
        keys, values = self.items(kind, prefix)
        if len(keys) == 0:
            return keys, values
        if values.dense is not None:  # one signature: scalars of a numeric dtype, or none
            numeric = values.dense.ndim == 1 and values.dense.dtype.kind in "biuf"
            idx = np.arange(len(values) if numeric else 0)
            nums = values.dense.astype(np.float64) if numeric else np.empty(0)
        else:
            idx = np.array([i for i in range(len(values))
                            if values.item(i)[0].ndim == 0 and values.item(i)[0].dtype.kind in "biuf"], dtype=np.int64)
            nums = np.array([values.item(i)[0].item() for i in idx.tolist()], dtype=np.float64)
        if len(idx) > k > 0:  # only values >= the k-th largest can be chosen (its ties too)
            near = np.flatnonzero(nums >= -np.partition(-nums, k - 1)[k - 1])
            idx, nums = idx[near], nums[near]
        _, inverse, counts = np.unique(nums, return_inverse=True, return_counts=True)
        tied = np.flatnonzero(counts[inverse] > 1)  # only their names decide an order
        names = dict(zip(tied.tolist(), keys.take(idx[tied]).to_list()))
        order = sorted(range(len(idx)), key=lambda j: (-nums[j], names.get(j)))[:k]
        pick = idx[np.array(order, dtype=np.int64)]
        return keys.take(pick), values.take(pick)


def _distinct(rows: np.ndarray, size: int) -> bool:
    """Whether ``rows`` (row numbers below ``size``) has no repeats: O(n), no sort."""
    if len(rows) < 2 or (rows[1:] > rows[:-1]).all():
        return True
    seen = np.zeros(size, dtype=bool)
    seen[rows] = True
    return int(np.count_nonzero(seen)) == len(rows)


def _run(rows: np.ndarray) -> np.ndarray | slice:
    """``rows`` as a slice where they are one increasing run (a block copy, not a scatter)."""
    n = len(rows)
    if n > 1 and rows[-1] - rows[0] == n - 1 and (rows[1:] > rows[:-1]).all():
        return slice(int(rows[0]), int(rows[0]) + n)
    return rows
