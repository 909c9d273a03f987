"""The transport of paracel's messages: a msgpack header plus raw numpy buffers, over MPI.

A message is sent as one header message (tag ``TAG_REQUEST`` or ``TAG_REPLY``) followed by
one ``TAG_DATA`` message per non-empty payload buffer, in order, to the same rank; the header's
``PAYLOAD_SIZES`` field lists the payload sizes in bytes so the receiver can post exact
receives. MPI keeps messages between two ranks in order, so a payload always follows its
header. What the header and buffers mean is ``paracel.protocol``'s business.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Sequence

import msgpack
import numpy as np
from mpi4py import MPI

from paracel.errors import MessageError
from paracel.waiting import BUSY, Backoff, wait_until

TAG_REQUEST = 11
TAG_REPLY = 12
TAG_DATA = 13

#: The header field that frames the payload: the size in bytes of every buffer, empty ones too.
PAYLOAD_SIZES = "nb"
#: MPICH's setting for CMA single copy between the ranks of a node (the receiver reads the
#: sender's memory), and the library that holds it.
CMA_CVAR, MPICH_LIBRARY = b"MPIR_CVAR_CH4_CMA_ENABLE", "libmpi.so.12"

Header = dict[str, Any]
#: ``landing(i, received)``: where payload buffer ``i`` should land, or None for anywhere.
Landing = Callable[[int, list[np.ndarray]], np.ndarray | None]


def _as_bytes(buf: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(buf).reshape(-1).view(np.uint8)


def receiver_driven(comm: MPI.Comm) -> bool:
    """Whether a large message between two ranks of ``comm`` moves on its receiver's MPI calls
    alone, so that its sender may compute while it is in flight without holding the receiver up.

    True with every rank on this node (hydra's ``MPI_LOCALNRANKS``) under MPICH with CMA single
    copy on: its CVAR, read through the MPI tool interface (MPICH turns it off where ptrace is
    not allowed, a user with ``MPIR_CVAR_CH4_CMA_ENABLE=0``). Without it a large message moves
    only while its sender calls MPI. False wherever this cannot be told (another MPI, several nodes).
    """
    if os.environ.get("MPI_LOCALNRANKS") != str(comm.Get_size()) or not MPI.Get_library_version().startswith("MPICH"):
        return False
    try:
        lib = ctypes.CDLL(MPICH_LIBRARY, mode=os.RTLD_NOLOAD)  # the one mpi4py loaded
    except OSError:
        return False
    provided, index, count, value = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    handle = ctypes.c_void_p()
    if lib.MPI_T_init_thread(0, ctypes.byref(provided)) != 0:
        return False
    try:
        if (lib.MPI_T_cvar_get_index(CMA_CVAR, ctypes.byref(index)) != 0
                or lib.MPI_T_cvar_handle_alloc(index, None, ctypes.byref(handle), ctypes.byref(count)) != 0):
            return False
        read = lib.MPI_T_cvar_read(handle, ctypes.byref(value))
        lib.MPI_T_cvar_handle_free(ctypes.byref(handle))
        return read == 0 and value.value == 1
    finally:
        lib.MPI_T_finalize()


def frame(header: Header, buffers: Sequence[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """The packed header (listing the payload sizes) and the non-empty payload buffers as bytes."""
    payload = [_as_bytes(b) for b in buffers]
    header[PAYLOAD_SIZES] = [b.nbytes for b in payload]
    return msgpack.packb(header), [b for b in payload if b.nbytes]


class Sends:
    """The messages a rank sent without blocking whose buffers MPI may still read.

    A worker posts every request this way and goes on; the sends move on whenever the rank calls
    MPI again (and, between ranks of a node under CMA, on the receiver's calls alone: see
    ``receiver_driven``), and ``wait`` completes them.
    """

    def __init__(self) -> None:
        self._pending: list[PendingSend] = []

    def __len__(self) -> int:
        return len(self._pending)

    def post(self, comm: MPI.Comm, dest: int, tag: int, header: Header,
             buffers: Sequence[np.ndarray] = ()) -> PendingSend:
        """Send a header and its payload buffers to ``dest`` without waiting; the buffers must
        stay unchanged until the send is done (``PendingSend.done``)."""
        sending = PendingSend(comm, dest, tag, header, buffers)
        if not sending.done():
            self._pending.append(sending)
        return sending

    def nbytes(self) -> int:
        """The bytes of the sends not known to be done."""
        return sum(s.nbytes for s in self._pending)

    def progress(self) -> None:
        """Forget the sends that are done."""
        if self._pending:
            self._pending = [s for s in self._pending if not s.done()]

    def wait(self, timeout: float | None = None,
             describe: Callable[[], str] = lambda: "no one received a message") -> None:
        """Return once every send is done, waiting without spinning a core (a large message
        moves only while this rank calls MPI, so it first only yields the core). Raises
        ``RequestTimeout`` with ``describe()`` if some are still pending after ``timeout`` seconds."""
        def done() -> bool:
            self.progress()
            return not self._pending
        wait_until(done, timeout, describe, Backoff(spin=BUSY))


class PendingSend:
    """A message sent without blocking; holds its buffers until MPI is done with them.

    Every rank sends this way: a rank that blocked in a send to a worker that is itself blocked
    sending to another server could close a cycle and deadlock the job. ``nbytes``: the bytes it
    moves (header and payload).
    """

    def __init__(self, comm: MPI.Comm, dest: int, tag: int, header: Header,
                 buffers: Sequence[np.ndarray] = ()) -> None:
        self._header, self._payload = frame(header, buffers)
        self.nbytes = len(self._header) + sum(b.nbytes for b in self._payload)
        self._requests = [comm.Isend([self._header, MPI.BYTE], dest, tag)]
        self._requests += [comm.Isend([b, MPI.BYTE], dest, TAG_DATA) for b in self._payload]

    def done(self) -> bool:
        """Whether every part has been sent (the buffers may then be reused)."""
        return MPI.Request.Testall(self._requests)


def unpack_header(packed: bytes | memoryview) -> Header:
    """The header in ``packed``; raises ``MessageError`` unless it is a msgpack map whose
    ``PAYLOAD_SIZES`` lists the payload sizes (ints >= 0)."""
    try:
        header = msgpack.unpackb(packed, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ValueError ...)
        raise MessageError(f"not a msgpack header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise MessageError(f"the header is a {type(header).__name__}, not a map")
    sizes = header.get(PAYLOAD_SIZES)
    if not (isinstance(sizes, list) and all(type(n) is int and n >= 0 for n in sizes)):
        raise MessageError(f"header field {PAYLOAD_SIZES!r} must list the payload sizes, got {sizes!r}")
    return header


class Receiver:
    """Receives headers and payloads into preallocated buffers that grow and are reused."""

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self._header_buf = bytearray(1 << 16)
        self._pool: list[np.ndarray] = []

    def header(self, status: MPI.Status) -> Header:
        """Receive the header that ``status`` (from a successful probe) describes."""
        count = status.Get_count(MPI.BYTE)
        if count > len(self._header_buf):
            self._header_buf = bytearray(2 * count)
        self.comm.Recv([self._header_buf, count, MPI.BYTE], status.Get_source(), status.Get_tag())
        return unpack_header(memoryview(self._header_buf)[:count])

    def payload(self, source: int, header: Header, reuse: bool, landing: Landing | None = None) -> list[np.ndarray]:
        """Receive the payload buffers announced by ``header`` as uint8 arrays.

        With ``reuse`` they land in this receiver's pool and are valid until its next call;
        otherwise each is freshly allocated (safe to hand to the user). ``landing`` may name
        where a buffer should land instead (a uint8 array of its exact size).
        """
        out: list[np.ndarray] = []
        for i, nbytes in enumerate(header[PAYLOAD_SIZES]):
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
