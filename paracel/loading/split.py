"""Splitting inputs by bytes into line-aligned shares, and reading a share in bounded chunks.

The rule that makes every line land on exactly one worker: the data bytes of all files, in
sorted order, form one stream of T bytes; worker r of W owns bytes [T*r//W, T*(r+1)//W) of it,
and reads exactly the lines whose *first byte* it owns. A line that crosses a range end is
read whole by the owner of its first byte; the next owner skips to the next line start.

A ``.gz`` file cannot be entered in the middle, so each worker whose compressed range touches
it decompresses from the start and maps its compressed range [s, e) of C bytes onto the
decompressed stream as [s*D//C, e*D//C), with D the gzip size trailer (a hint only: the last
range is open-ended, so the shares always tile the stream even when the hint is wrong).
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Iterator

from .inputs import InputFile, gunzip_pieces, gzip_size_hint

DEFAULT_BLOCK = 64 << 20


@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of ``file`` assigned to one worker (compressed bytes for gzip)."""

    file: InputFile
    start: int
    end: int


@dataclass(frozen=True)
class Chunk:
    """Whole lines of one file: ``data`` starts at (decompressed) byte ``offset`` of ``path``."""

    data: bytes | memoryview
    path: str
    gz: bool
    offset: int


def _extent(f: InputFile) -> tuple[int, int]:
    return (0, f.size) if f.gz else (min(f.header_end, f.size), f.size)


def assign(files: list[InputFile], rank: int, size: int) -> list[Piece]:
    """The pieces of ``files`` that worker ``rank`` of ``size`` reads (see module doc)."""
    total = sum(b - a for a, b in map(_extent, files))
    lo, hi = total * rank // size, total * (rank + 1) // size
    pieces, base = [], 0
    for f in files:
        a, b = _extent(f)
        s, e = max(lo, base), min(hi, base + b - a)
        if s < e:
            pieces.append(Piece(f, a + s - base, a + e - base))
        base += b - a
    return pieces


def whole(files: list[InputFile]) -> list[Piece]:
    """Every file in full (for readers that load everything)."""
    return [Piece(f, *_extent(f)) for f in files if _extent(f)[0] < _extent(f)[1]]


def chunks(pieces: list[Piece], block: int = DEFAULT_BLOCK) -> Iterator[Chunk]:
    """The lines owned by ``pieces``, as chunks of about ``block`` bytes each (never split lines)."""
    for piece in pieces:
        if piece.file.gz:
            yield from _gz_chunks(piece, block)
        else:
            yield from _plain_chunks(piece, block)


def _plain_chunks(piece: Piece, block: int) -> Iterator[Chunk]:
    # Memory-mapped: a chunk is a view of the page cache, not a copy of it.
    path, end, size = piece.file.path, piece.end, piece.file.size
    if piece.start >= end or size == 0:
        return
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    pos = piece.start
    if pos > piece.file.header_end and mapped[pos - 1] != 10:
        pos = _line_end(mapped, pos, size)
    while pos < end:
        stop = min(pos + block, end)
        if mapped[stop - 1] != 10:
            cut = mapped.rfind(b"\n", pos, stop)
            # whole lines only: end at the block's last LF, or run on to the end of the line
            stop = cut + 1 if cut >= 0 and stop < size else _line_end(mapped, stop, size)
        yield Chunk(view[pos:stop], path, False, pos)
        pos = stop


def _line_end(mapped: mmap.mmap, pos: int, size: int) -> int:
    """Offset just past the first LF at or after ``pos`` (the file size if there is none)."""
    lf = mapped.find(b"\n", pos)
    return size if lf < 0 else lf + 1


def _first_start_at_or_after(data: bytes, t: int) -> int:
    """Index of the first line start >= t in ``data`` (which starts at a line start)."""
    if t <= 0:
        return 0
    if t >= len(data):
        return len(data)
    k = data.find(b"\n", t - 1)
    return len(data) if k < 0 else k + 1


def _gz_chunks(piece: Piece, block: int) -> Iterator[Chunk]:
    f = piece.file
    hint = gzip_size_hint(f.path)
    lo = max(f.header_end, piece.start * hint // f.size)
    hi = None if piece.end >= f.size else piece.end * hint // f.size
    out, out_off, out_len = [], -1, 0
    for part in _gz_lines(f.path):
        data, off = part
        if hi is not None and off >= hi:
            break
        a = _first_start_at_or_after(data, lo - off)
        b = len(data) if hi is None else _first_start_at_or_after(data, hi - off)
        if a < b:
            if out_off < 0:
                out_off = off + a
            out.append(data[a:b])
            out_len += b - a
            if out_len >= block:
                yield Chunk(b"".join(out), f.path, True, out_off)
                out, out_off, out_len = [], -1, 0
    if out:
        yield Chunk(b"".join(out), f.path, True, out_off)


def _gz_lines(path: str) -> Iterator[tuple[bytes, int]]:
    """Line-aligned pieces of a gzip file's decompressed stream, with their offsets."""
    pending, off = b"", 0
    for part in gunzip_pieces(path):
        buf = pending + part if pending else part
        k = buf.rfind(b"\n")
        if k < 0:
            pending = buf
            continue
        yield buf[:k + 1], off
        off += k + 1
        pending = buf[k + 1:]
    if pending:
        yield pending, off
