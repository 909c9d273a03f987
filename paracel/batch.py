"""Batches of keys and values, and their wire form (header fields plus numpy buffers).

Key batches travel as an int64 array (``INT_KEYS``) or as UTF-8 bytes plus int64 offsets
(``STR_KEYS``). Value batches travel dense — one array of shape ``(n, *shape)`` whose rows are
the values — or ragged, one descriptor per value in the header and their bytes concatenated in
one buffer. In a message the key batch's buffers come first, then the value batch's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from paracel._ext.hashing import hash_bytes, hash_int_keys
from paracel._ext.keyindex import decode_strs, encode_strs, gather_bytes
from paracel.errors import MessageError

Key = int | str

#: How a value was given, so it comes back the same way: ndarray, Python number, numpy scalar.
PY_ARRAY, PY_NUMBER, PY_NUMPY_SCALAR = 0, 1, 2

#: The two kinds of key batch (and the two namespaces of keys: int 7 is not str "7").
INT_KEYS, STR_KEYS = "i", "s"
#: How many buffers a key batch of each kind travels in.
KEY_BUFFERS = {INT_KEYS: 1, STR_KEYS: 2}

# Header fields of a batch (compact on the wire; the protocol's own fields are in paracel.protocol).
KEY_KIND = "kk"
COUNT = "n"
DENSE_DTYPE = "vd"  # descr of the dense rows' dtype
DENSE_SHAPE = "vs"  # shape of one row
DENSE_PY = "vp"  # how the dense values were given (PY_*)
RAGGED = "vl"  # [descr, shape, py] of every ragged value
BATCH_FIELDS = frozenset({KEY_KIND, COUNT, DENSE_DTYPE, DENSE_SHAPE, DENSE_PY, RAGGED})

#: A value's dtype, shape and how it was given: values of one signature share a table block.
Signature = tuple[np.dtype, tuple[int, ...], int]


# ---------------------------------------------------------------------------- keys
@dataclass
class KeyBatch:
    """A batch of keys of one kind: ``ints`` (int64) or UTF-8 ``blob`` + ``offsets`` (n+1)."""

    ints: np.ndarray | None = None
    blob: np.ndarray | None = None
    offsets: np.ndarray | None = None

    @classmethod
    def of(cls, keys: Iterable[Key] | np.ndarray | Key) -> KeyBatch:
        """Batch user keys: one int/str, a sequence of all-int or all-str keys, or an int array.

        Int keys are 64-bit signed; bools, floats and any other type are refused. Raises
        ``TypeError`` naming a key of another type (or the kinds of a mix of int and str keys),
        ``ValueError`` naming an int key out of the int64 range or a str key that is not UTF-8.
        """
        if isinstance(keys, np.ndarray):
            return cls(ints=_int_key_array(keys))
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
            keys = [keys]
        keys = list(keys)
        kinds = set(map(type, keys))  # C speed; the types decide the batch, never a conversion
        if kinds and all(issubclass(t, str) for t in kinds):
            return cls._of_strs(keys)
        bad = [t for t in kinds if not _is_int_key_type(t)]
        if bad:
            if all(issubclass(t, str) for t in bad):
                raise TypeError(f"keys must be all int or all str in one call; got int {_first(keys, int)!r} "
                                f"and str {_first(keys, str)!r}")
            key = next(k for k in keys if type(k) in bad)
            raise TypeError(f"key {key!r} is a {type(key).__name__}: keys are int (64-bit) or str")
        try:
            return cls(ints=np.array(keys, dtype=np.int64).reshape(-1))
        except OverflowError:
            key = next(k for k in keys if not INT64_MIN <= k <= INT64_MAX)
            raise ValueError(f"int key {key} is out of the 64-bit range [-2**63, 2**63)") from None

    @classmethod
    def _of_strs(cls, keys: list[str]) -> KeyBatch:
        try:
            blob, offsets = encode_strs(keys)
        except UnicodeEncodeError:
            key = next(k for k in keys if not _encodes(k))
            raise ValueError(f"str key {key!r} cannot be encoded as UTF-8") from None
        return cls(blob=blob, offsets=offsets)

    @classmethod
    def empty(cls, kind: str) -> KeyBatch:
        """A batch of no keys of ``kind`` (``INT_KEYS`` or ``STR_KEYS``)."""
        if kind == INT_KEYS:
            return cls(ints=np.empty(0, np.int64))
        return cls(blob=np.empty(0, np.uint8), offsets=np.zeros(1, np.int64))

    @property
    def kind(self) -> str:
        """``INT_KEYS`` or ``STR_KEYS``."""
        return INT_KEYS if self.ints is not None else STR_KEYS

    def __len__(self) -> int:
        return len(self.ints) if self.ints is not None else len(self.offsets) - 1

    def hashes(self) -> np.ndarray:
        """Deterministic uint64 hash of every key (see csrc/hashing.pyx)."""
        if self.ints is not None:
            return hash_int_keys(self.ints)
        return hash_bytes(self.blob, self.offsets)

    def take(self, index: np.ndarray) -> KeyBatch:
        """The keys at positions ``index``, in that order."""
        if self.ints is not None:
            return KeyBatch(ints=self.ints[index])
        blob, offsets = gather_bytes(self.blob, self.offsets, np.ascontiguousarray(index, dtype=np.int64))
        return KeyBatch(blob=blob, offsets=offsets)

    def to_list(self) -> list[Key]:
        """The keys as Python ints or strs."""
        if self.ints is not None:
            return self.ints.tolist()
        return decode_strs(self.blob, self.offsets)

    def describe(self, limit: int = 5) -> str:
        """A short human-readable listing of the first keys, for error messages."""
        keys = self.take(np.arange(min(limit, len(self)))).to_list()
        more = f" and {len(self) - limit} more" if len(self) > limit else ""
        return ", ".join(repr(k) for k in keys) + more

    def header(self) -> dict[str, Any]:
        """The header fields that describe this batch on the wire."""
        return {KEY_KIND: self.kind, COUNT: len(self)}

    def buffers(self) -> list[np.ndarray]:
        """The buffers this batch travels in."""
        return [self.ints] if self.ints is not None else [self.blob, self.offsets]

    @classmethod
    def from_wire(cls, header: dict[str, Any], buffers: list[np.ndarray]) -> tuple[KeyBatch, list[np.ndarray]]:
        """Decode the key batch at the head of ``buffers``; returns it and the remaining buffers.

        Raises ``MessageError`` if the header and the buffers do not describe a key batch.
        """
        kind, count = header.get(KEY_KIND), _count(header.get(COUNT))
        if not isinstance(kind, str) or kind not in KEY_BUFFERS or len(buffers) < KEY_BUFFERS[kind]:
            raise MessageError(f"no key batch: kind {kind!r} with {len(buffers)} buffers")
        if kind == INT_KEYS:
            _check_size("int keys", buffers[0], 8 * count)
            return cls(ints=buffers[0].view(np.int64)), buffers[1:]
        _check_size("str key offsets", buffers[1], 8 * (count + 1))
        offsets = buffers[1].view(np.int64)
        if offsets[0] != 0 or offsets[-1] != buffers[0].nbytes or (np.diff(offsets) < 0).any():
            raise MessageError(f"str key offsets do not split the {buffers[0].nbytes} key bytes")
        return cls(blob=buffers[0], offsets=offsets), buffers[2:]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _is_int_key_type(t: type) -> bool:
    """Python and numpy integers are int keys; bools (an int subclass) are not."""
    return issubclass(t, (int, np.integer)) and not issubclass(t, (bool, np.bool_))


def _int_key_array(keys: np.ndarray) -> np.ndarray:
    """An array of int keys as contiguous int64 (flattened); raises for other dtypes and for
    unsigned values beyond the int64 range."""
    if keys.dtype.kind not in "iu":
        raise TypeError(f"key arrays must hold integers, not {keys.dtype}")
    if keys.dtype.kind == "u" and keys.dtype.itemsize == 8 and keys.size and keys.max() > INT64_MAX:
        raise ValueError(f"int key {keys.max()} is out of the 64-bit range [-2**63, 2**63)")
    return np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)


def _first(keys: list[Any], kind: type) -> Any:
    return next(k for k in keys if isinstance(k, kind))


def _encodes(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------- values
def as_value(value: Any) -> tuple[np.ndarray, int]:
    """The array form of a table value and how it was given (``PY_*``).

    Raises ``TypeError`` for anything but numbers and numeric/bool/bytes numpy arrays.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("table values cannot be object arrays")
        return value, PY_ARRAY
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return np.asarray(value), PY_NUMPY_SCALAR
    if isinstance(value, (bool, int, float, complex)):
        try:
            return np.asarray(value), PY_NUMBER
        except OverflowError:
            raise TypeError(f"integer {value} does not fit in 64 bits") from None
    raise TypeError(f"table values must be numbers or numpy arrays, not {type(value).__name__}")


def from_array(arr: np.ndarray, py: int) -> Any:
    """The user-facing value of a stored array (inverse of ``as_value``)."""
    if py == PY_NUMBER:
        return arr.item()
    if py == PY_NUMPY_SCALAR:
        return arr[()]
    return arr


def dtype_of(descr: Any) -> np.dtype:
    """The dtype of a descr from a header (msgpack turns a structured descr's tuples into lists).

    Raises ``MessageError`` for anything but the descr of a dtype without Python objects.
    """
    try:
        dtype = descr_to_dtype(descr if isinstance(descr, str) else [tuple(f) for f in descr])
    except Exception as exc:  # numpy raises TypeError, ValueError, KeyError ... on a bad descr
        raise MessageError(f"not a dtype: {descr!r} ({type(exc).__name__})") from None
    if dtype.hasobject or dtype.itemsize == 0:  # bytes taken for pointers; no bytes to tell values apart
        raise MessageError(f"values cannot have dtype {dtype}")
    return dtype


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise MessageError(f"a batch's count must be an int >= 0, got {value!r}")
    return value


def _shape(value: Any) -> tuple[int, ...]:
    if not (isinstance(value, list) and all(type(n) is int and n >= 0 for n in value)):
        raise MessageError(f"a value's shape must list ints >= 0, got {value!r}")
    return tuple(value)


def _py(value: Any) -> int:
    if value not in (PY_ARRAY, PY_NUMBER, PY_NUMPY_SCALAR) or type(value) is not int:
        raise MessageError(f"unknown value type {value!r}")
    return value


def _check_size(what: str, buffer: np.ndarray, nbytes: int) -> None:
    if buffer.nbytes != nbytes:
        raise MessageError(f"{what}: a buffer of {buffer.nbytes} bytes where {nbytes} are due")


@dataclass
class ValueBatch:
    """Values of a batch: ``dense`` rows (one signature) or a ``ragged`` list of (array, py)."""

    dense: np.ndarray | None = None
    py: int = PY_ARRAY
    ragged: list[tuple[np.ndarray, int]] | None = None

    @classmethod
    def of(cls, values: Sequence[Any] | np.ndarray, n: int) -> ValueBatch:
        """Batch ``n`` user values: an array with one row per key (rows of a 1-D array are
        numpy scalars), or a sequence of values (stacked when they share dtype and shape).

        Raises ``ValueError`` if the count differs from ``n``, ``TypeError`` for bad values.
        """
        if isinstance(values, np.ndarray):
            if values.ndim == 0 or len(values) != n:
                raise ValueError(f"{n} keys but a values array of shape {values.shape}")
            as_value(values)  # rejects object arrays
            return cls(dense=np.ascontiguousarray(values), py=PY_NUMPY_SCALAR if values.ndim == 1 else PY_ARRAY)
        values = list(values)
        if len(values) != n:
            raise ValueError(f"{n} keys but {len(values)} values")
        kinds = set(map(type, values))  # all Python ints or all floats: one C conversion
        if len(kinds) == 1 and kinds <= {int, float}:
            try:
                return cls(dense=np.array(values, dtype=np.int64 if int in kinds else np.float64), py=PY_NUMBER)
            except OverflowError:  # an int beyond int64: value by value, as below
                pass
        pairs = [as_value(v) for v in values]
        if len(pairs) == 1:  # a view, not a copy: one value may be a large array
            arr = pairs[0][0]
            return cls(dense=(arr if arr.flags.c_contiguous else arr.copy(order="C"))[None], py=pairs[0][1])
        if pairs and all(a.dtype == pairs[0][0].dtype and a.shape == pairs[0][0].shape and p == pairs[0][1]
                         for a, p in pairs):
            stacked = np.stack([a for a, _ in pairs]).astype(pairs[0][0].dtype, copy=False)  # keeps byte order
            return cls(dense=stacked, py=pairs[0][1])
        return cls(ragged=pairs)

    def __len__(self) -> int:
        return len(self.dense) if self.dense is not None else len(self.ragged)

    def take(self, index: np.ndarray) -> ValueBatch:
        """The values at positions ``index``, in that order."""
        if self.dense is not None:
            return ValueBatch(dense=np.take(self.dense, index, axis=0), py=self.py)
        return ValueBatch(ragged=[self.ragged[i] for i in index.tolist()])

    def item(self, i: int) -> tuple[np.ndarray, int]:
        """Value ``i`` as (array, py)."""
        if self.dense is not None:
            return self.dense[i, ...], self.py  # [i, ...] keeps 0-d rows arrays
        return self.ragged[i]

    def to_list(self) -> list[Any]:
        """The user-facing values (see ``from_array``)."""
        if self.dense is not None:
            if self.py == PY_NUMBER:
                return self.dense.tolist()
            if self.py == PY_NUMPY_SCALAR and self.dense.ndim == 1:
                return list(self.dense)
            return [from_array(self.dense[i, ...], self.py) for i in range(len(self.dense))]
        return [from_array(a, p) for a, p in self.ragged]

    def header(self) -> dict[str, Any]:
        """The header fields that describe this batch on the wire."""
        if self.dense is not None:
            return {DENSE_DTYPE: dtype_to_descr(self.dense.dtype), DENSE_SHAPE: list(self.dense.shape[1:]),
                    DENSE_PY: self.py}
        return {RAGGED: [[dtype_to_descr(a.dtype), list(a.shape), p] for a, p in self.ragged]}

    def buffers(self) -> list[np.ndarray]:
        """The one buffer this batch travels in."""
        if self.dense is not None:
            return [self.dense]
        parts = [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a, _ in self.ragged]
        return [np.concatenate(parts) if parts else np.empty(0, np.uint8)]

    @staticmethod
    def dense_signature(header: dict[str, Any]) -> Signature | None:
        """The signature of every row of a dense batch described by ``header``; None if ragged.

        Raises ``MessageError`` if the header's description is not one.
        """
        if DENSE_DTYPE not in header:
            return None
        return dtype_of(header[DENSE_DTYPE]), _shape(header.get(DENSE_SHAPE)), _py(header.get(DENSE_PY))

    @classmethod
    def from_wire(cls, header: dict[str, Any], buffers: list[np.ndarray], n: int) -> ValueBatch:
        """Decode ``n`` values as views of ``buffers`` (copy them if the buffers are reused).

        Raises ``MessageError`` if the header and the buffers do not describe ``n`` values.
        """
        if len(buffers) != 1:
            raise MessageError(f"values travel in one buffer, not {len(buffers)}")
        signature = cls.dense_signature(header)
        if signature is not None:
            dtype, shape, py = signature
            _check_size(f"{n} values of {dtype} {shape}", buffers[0], n * dtype.itemsize * math.prod(shape))
            return cls(dense=buffers[0].view(dtype).reshape(n, *shape), py=py)
        described = header.get(RAGGED)
        if not (isinstance(described, list) and len(described) == n
                and all(isinstance(d, list) and len(d) == 3 for d in described)):
            raise MessageError(f"no description of {n} values")
        values = [(dtype_of(descr), _shape(shape), _py(py)) for descr, shape, py in described]
        sizes = [dtype.itemsize * math.prod(shape) for dtype, shape, _ in values]
        blob = buffers[0]
        _check_size(f"{n} values", blob, sum(sizes))
        ends = np.cumsum([0, *sizes]).tolist()
        return cls(ragged=[(blob[a:b].view(dtype).reshape(shape), py)
                           for (dtype, shape, py), a, b in zip(values, ends, ends[1:])])
