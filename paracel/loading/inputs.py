"""Input resolution: a file, a folder (walked recursively) or a glob becomes a sorted file list."""
from __future__ import annotations

import glob
import gzip
import os
import zlib
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

from .errors import LoadError

Pattern = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

_GLOB_CHARS = set("*?[")
_PIECE = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One input file: ``size`` in bytes on disk; ``header_end`` is the (decompressed) byte
    offset just past the first ``header`` lines, which are not data."""

    path: str
    size: int
    gz: bool
    header_end: int


def resolve(pattern: Pattern) -> list[str]:
    """The files named by ``pattern`` (or by each pattern of a list), sorted, without repeats.

    A folder contributes every regular file below it whose name does not start with ``.``.
    Raises :class:`LoadError` naming the pattern if a path does not exist or a glob matches
    nothing.
    """
    patterns = [pattern] if isinstance(pattern, (str, os.PathLike)) else list(pattern)
    if not patterns:
        raise LoadError("no input pattern given")
    found: set[str] = set()
    for pat in patterns:
        text = os.fspath(pat)
        if _GLOB_CHARS & set(text):
            matches = glob.glob(text, recursive=True)
            if not matches:
                raise LoadError(f"input pattern {text!r} matched no files")
        elif os.path.exists(text):
            matches = [text]
        else:
            raise LoadError(f"input path {text!r} does not exist")
        for match in matches:
            if os.path.isdir(match):
                found.update(_walk(match))
            else:
                found.add(os.path.abspath(match))
    if not found:
        raise LoadError(f"input pattern {patterns!r} holds no files")
    return sorted(found)


def _walk(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield os.path.abspath(os.path.join(root, name))


def describe(paths: list[str], header: int = 0) -> list[InputFile]:
    """Sizes and header extents of ``paths`` (``.gz`` files are gzip streams)."""
    out = []
    for path in paths:
        gz = path.endswith(".gz")
        header_end = _header_end(path, gz, header) if header else 0
        out.append(InputFile(path, os.path.getsize(path), gz, header_end))
    return out


def open_stream(path: str, gz: bool):
    """A binary reader of the file's (decompressed) bytes."""
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _header_end(path: str, gz: bool, header: int) -> int:
    with open_stream(path, gz) as f:
        for _ in range(header):
            if not f.readline():
                break
        return f.tell()


def line_number(path: str, gz: bool, offset: int) -> int:
    """1-based number of the line starting at (decompressed) byte ``offset``; error path only."""
    count, left = 1, offset
    with open_stream(path, gz) as f:
        while left > 0:
            piece = f.read(min(_PIECE, left))
            if not piece:
                break
            count += piece.count(b"\n")
            left -= len(piece)
    return count


def gunzip_pieces(path: str) -> Iterator[bytes]:
    """Decompressed pieces of a (possibly multi-member) gzip file, in order."""
    with open(path, "rb") as f:
        dec = zlib.decompressobj(wbits=31)
        while True:
            raw = f.read(_PIECE)
            if not raw:
                break
            while raw:
                out = dec.decompress(raw)
                if out:
                    yield out
                if dec.eof:
                    raw = dec.unused_data
                    dec = zlib.decompressobj(wbits=31)
                else:
                    raw = b""
        tail = dec.flush()
        if tail:
            yield tail


def gzip_size_hint(path: str) -> int:
    """The ISIZE trailer of a gzip file: its decompressed size mod 2**32 (for one member)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 4:
            return 0
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def file_label(path: str) -> str:
    """The path as it appears in messages (relative to the working folder when shorter)."""
    rel = os.path.relpath(path)
    return rel if len(rel) < len(path) else path


__all__ = ["InputFile", "Pattern", "resolve", "describe", "open_stream", "line_number",
           "gunzip_pieces", "gzip_size_hint", "file_label"]
