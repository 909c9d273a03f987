"""The one place that defines paracel's messages: a msgpack header plus raw numpy buffers.

A message is sent as one header message (tag ``TAG_REQUEST`` or ``TAG_REPLY``) followed by
one ``TAG_DATA`` message per non-empty payload buffer, in order, to the same rank; the header's
``nb`` field lists the payload sizes in bytes so the receiver can post exact receives. MPI keeps
messages between two ranks in order, so a payload always follows its header.

Key batches travel as an int64 array (``kk="i"``) or as UTF-8 bytes plus int64 offsets
(``kk="s"``). Value batches travel dense — one array of shape ``(n, *shape)`` whose rows are the
values (``vd``/``vs``/``vp``) — or ragged, one descriptor per value in the header (``vl``) and
their bytes concatenated in one buffer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import msgpack
import numpy as np
from mpi4py import MPI
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from paracel._ext.hashing import hash_bytes, hash_int_keys
from paracel._ext.keyindex import gather_bytes

TAG_REQUEST = 11
TAG_REPLY = 12
TAG_DATA = 13

#: How a value was given, so it comes back the same way: ndarray, Python number, numpy scalar.
PY_ARRAY, PY_NUMBER, PY_NUMPY_SCALAR = 0, 1, 2

Key = int | str


# ---------------------------------------------------------------------------- keys
@dataclass
class KeyBatch:
    """A batch of keys of one kind: ``ints`` (int64) or UTF-8 ``blob`` + ``offsets`` (n+1)."""

    ints: np.ndarray | None = None
    blob: np.ndarray | None = None
    offsets: np.ndarray | None = None

    @classmethod
    def of(cls, keys: Iterable[Key] | np.ndarray | Key) -> "KeyBatch":
        """Batch user keys: one int/str, a sequence of all-int or all-str keys, or an int array.

        Raises ``TypeError`` for other key types and for a mix of int and str keys.
        """
        if isinstance(keys, (int, np.integer, str)):
            keys = [keys]
        if isinstance(keys, np.ndarray):
            if keys.dtype.kind not in "iu":
                raise TypeError(f"key arrays must hold integers, not {keys.dtype}")
            return cls(ints=np.ascontiguousarray(keys, dtype=np.int64).reshape(-1))
        keys = list(keys)
        if all(isinstance(k, str) for k in keys) and keys:
            encoded = [k.encode("utf-8") for k in keys]
            offsets = np.zeros(len(keys) + 1, dtype=np.int64)
            np.cumsum([len(e) for e in encoded], out=offsets[1:])
            return cls(blob=np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets=offsets)
        try:
            return cls(ints=np.array(keys, dtype=np.int64).reshape(-1))
        except (TypeError, ValueError, OverflowError):
            bad = [k for k in keys if not isinstance(k, (int, np.integer))][:3]
            raise TypeError(f"keys must be all int or all str in one call; got {bad!r}") from None

    @property
    def kind(self) -> str:
        return "i" if self.ints is not None else "s"

    def __len__(self) -> int:
        return len(self.ints) if self.ints is not None else len(self.offsets) - 1

    def hashes(self) -> np.ndarray:
        """Deterministic uint64 hash of every key (see csrc/hashing.pyx)."""
        if self.ints is not None:
            return hash_int_keys(self.ints)
        return hash_bytes(self.blob, self.offsets)

    def take(self, index: np.ndarray) -> "KeyBatch":
        """The keys at positions ``index``, in that order."""
        if self.ints is not None:
            return KeyBatch(ints=self.ints[index])
        blob, offsets = gather_bytes(self.blob, self.offsets, np.ascontiguousarray(index, dtype=np.int64))
        return KeyBatch(blob=blob, offsets=offsets)

    def to_list(self) -> list[Key]:
        if self.ints is not None:
            return self.ints.tolist()
        data = self.blob.tobytes()
        offs = self.offsets.tolist()
        return [data[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:])]

    def describe(self, limit: int = 5) -> str:
        """A short human-readable listing of the first keys, for error messages."""
        keys = self.take(np.arange(min(limit, len(self)))).to_list()
        more = f" and {len(self) - limit} more" if len(self) > limit else ""
        return ", ".join(repr(k) for k in keys) + more

    def header(self) -> dict[str, Any]:
        return {"kk": self.kind, "n": len(self)}

    def buffers(self) -> list[np.ndarray]:
        return [self.ints] if self.ints is not None else [self.blob, self.offsets]

    @classmethod
    def from_wire(cls, header: dict[str, Any], buffers: list[np.ndarray]) -> tuple["KeyBatch", list[np.ndarray]]:
        """Decode the key batch at the head of ``buffers``; returns it and the remaining buffers."""
        if header["kk"] == "i":
            return cls(ints=buffers[0].view(np.int64)), buffers[1:]
        return cls(blob=buffers[0], offsets=buffers[1].view(np.int64)), buffers[2:]


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


@dataclass
class ValueBatch:
    """Values of a batch: ``dense`` rows (one signature) or a ``ragged`` list of (array, py)."""

    dense: np.ndarray | None = None
    py: int = PY_ARRAY
    ragged: list[tuple[np.ndarray, int]] | None = None

    @classmethod
    def of(cls, values: Sequence[Any] | np.ndarray, n: int) -> "ValueBatch":
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

    def take(self, index: np.ndarray) -> "ValueBatch":
        if self.dense is not None:
            return ValueBatch(dense=self.dense[index], py=self.py)
        return ValueBatch(ragged=[self.ragged[i] for i in index.tolist()])

    def item(self, i: int) -> tuple[np.ndarray, int]:
        """Value ``i`` as (array, py)."""
        if self.dense is not None:
            return self.dense[i, ...], self.py  # [i, ...] keeps 0-d rows arrays
        return self.ragged[i]

    def to_list(self) -> list[Any]:
        if self.dense is not None:
            if self.py == PY_NUMBER:
                return self.dense.tolist()
            return [from_array(self.dense[i, ...], self.py) for i in range(len(self.dense))]
        return [from_array(a, p) for a, p in self.ragged]

    def header(self) -> dict[str, Any]:
        if self.dense is not None:
            return {"vd": dtype_to_descr(self.dense.dtype), "vs": list(self.dense.shape[1:]), "vp": self.py}
        return {"vl": [[dtype_to_descr(a.dtype), list(a.shape), p] for a, p in self.ragged]}

    def buffers(self) -> list[np.ndarray]:
        if self.dense is not None:
            return [self.dense]
        parts = [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a, _ in self.ragged]
        return [np.concatenate(parts) if parts else np.empty(0, np.uint8)]

    @classmethod
    def from_wire(cls, header: dict[str, Any], buffers: list[np.ndarray], n: int) -> "ValueBatch":
        """Decode values as views of ``buffers`` (copy them if the buffers are reused)."""
        if "vd" in header:
            dtype = dtype_of(header["vd"])
            return cls(dense=buffers[0].view(dtype).reshape(n, *header["vs"]), py=header["vp"])
        blob, pos, out = buffers[0], 0, []
        for descr, shape, py in header["vl"]:
            dtype = dtype_of(descr)
            size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            out.append((blob[pos:pos + size].view(dtype).reshape(shape), py))
            pos += size
        return cls(ragged=out)


def dtype_of(descr: Any) -> np.dtype:
    """The dtype of a descr from a header (msgpack turns a structured descr's tuples into lists)."""
    return descr_to_dtype(descr if isinstance(descr, str) else [tuple(f) for f in descr])


# ---------------------------------------------------------------------------- transport
def _as_bytes(buf: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(buf).reshape(-1).view(np.uint8)


def _frame(header: dict[str, Any], buffers: Sequence[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """The packed header (listing the payload sizes) and the non-empty payload buffers as bytes."""
    payload = [_as_bytes(b) for b in buffers]
    header["nb"] = [b.nbytes for b in payload]
    return msgpack.packb(header), [b for b in payload if b.nbytes]


def send(comm: MPI.Comm, dest: int, tag: int, header: dict[str, Any], buffers: Sequence[np.ndarray] = ()) -> None:
    """Send a header and its payload buffers to ``dest`` (blocking until the buffers are free)."""
    packed, payload = _frame(header, buffers)
    comm.Send([packed, MPI.BYTE], dest, tag)
    for b in payload:
        comm.Send([b, MPI.BYTE], dest, TAG_DATA)


class PendingSend:
    """A message sent without blocking; holds its buffers until MPI is done with them.

    Servers and the clock reply this way: a rank that blocked in a send to a worker that is
    itself blocked sending to another server could close a cycle and deadlock the job.
    """

    def __init__(self, comm: MPI.Comm, dest: int, tag: int, header: dict[str, Any],
                 buffers: Sequence[np.ndarray] = ()) -> None:
        self._header, self._payload = _frame(header, buffers)
        self._requests = [comm.Isend([self._header, MPI.BYTE], dest, tag)]
        self._requests += [comm.Isend([b, MPI.BYTE], dest, TAG_DATA) for b in self._payload]

    def done(self) -> bool:
        """Whether every part has been sent (the buffers may then be reused)."""
        return MPI.Request.Testall(self._requests)


class Receiver:
    """Receives headers and payloads into preallocated buffers that grow and are reused."""

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self._header_buf = bytearray(1 << 16)
        self._pool: list[np.ndarray] = []

    def header(self, status: MPI.Status) -> dict[str, Any]:
        """Receive the header that ``status`` (from a successful probe) describes."""
        count = status.Get_count(MPI.BYTE)
        if count > len(self._header_buf):
            self._header_buf = bytearray(2 * count)
        self.comm.Recv([self._header_buf, count, MPI.BYTE], status.Get_source(), status.Get_tag())
        return msgpack.unpackb(memoryview(self._header_buf)[:count], strict_map_key=False)

    def payload(self, source: int, header: dict[str, Any], reuse: bool,
                landing: Callable[[int, list[np.ndarray]], np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Receive the payload buffers announced by ``header`` as uint8 arrays.

        With ``reuse`` they land in this receiver's pool and are valid until its next call;
        otherwise each is freshly allocated (safe to hand to the user). ``landing(i, received)``
        may name where buffer ``i`` should land instead (a uint8 array of its exact size).
        """
        out: list[np.ndarray] = []
        for i, nbytes in enumerate(header["nb"]):
            buf = landing(i, out) if landing is not None else None
            if buf is not None and buf.nbytes == nbytes:
                pass
            elif reuse:
                if i == len(self._pool):
                    self._pool.append(np.empty(0, np.uint8))
                if self._pool[i].nbytes < nbytes:
                    self._pool[i] = np.empty(max(nbytes, 2 * self._pool[i].nbytes), np.uint8)
                buf = self._pool[i][:nbytes]
            else:
                buf = np.empty(nbytes, np.uint8)
            if nbytes:
                self.comm.Recv([buf, MPI.BYTE], source, TAG_DATA)
            out.append(buf)
        return out
