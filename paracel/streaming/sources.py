"""Where a stream's lines come from: a finite file (optionally replayed in the order of a
field), a file followed as it grows (``tail -f``), or standard input.

A source is polled: ``poll()`` returns the next line (without its line break), ``None`` when none is available yet (a
followed file or stdin that has not received more), or ``END`` once the stream has ended.
"""
from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from paracel.errors import ParacelError

END: Any = object()  # the stream has ended
STDIN = "-"


class StreamInputError(ParacelError, ValueError):
    """A stream's input cannot be read; the message names the path (and line)."""


class FileSource:
    """The lines of a finite file, once or ``passes`` times. With ``order_by`` (a 0-based
    whitespace-separated numeric field) the whole file is read first and replayed sorted by
    that field (stable: ties keep file order), e.g. ratings in timestamp order; with
    ``shuffle`` (a seed) it is replayed in a random order, a new one each pass (the same on
    every worker). Blank lines are dropped from a replay."""

    def __init__(self, path: str, passes: int = 1, order_by: int | None = None, shuffle: int | None = None) -> None:
        self.path = path
        if not Path(path).is_file():
            raise StreamInputError(f"stream input {path!r}: no such file")
        self._lines = self._read(passes) if order_by is None and shuffle is None else self._replay(passes, order_by,
                                                                                                     shuffle)

    def _read(self, passes: int) -> Iterator[str]:
        for _ in range(passes):
            with open(self.path, encoding="utf-8") as lines:
                yield from (line.rstrip("\r\n") for line in lines)

    def _replay(self, passes: int, field: int | None, seed: int | None) -> Iterator[str]:
        lines = [line for line in Path(self.path).read_text(encoding="utf-8").splitlines() if line.strip()]
        rng = np.random.default_rng(seed)
        order = None if field is None else sorted(range(len(lines)), key=self._keys(lines, field).__getitem__)
        for _ in range(passes):
            yield from (lines[i] for i in (rng.permutation(len(lines)) if order is None else order))

    def _keys(self, lines: list[str], field: int) -> list[float]:
        keys = []
        for number, line in enumerate(lines, 1):
            try:
                keys.append(float(line.split()[field]))
            except (IndexError, ValueError):
                raise StreamInputError(f"{self.path}:{number}: no numeric field {field} to order by "
                                       f"in {line[:60]!r}") from None
        return keys

    def poll(self) -> str | Any:
        return next(self._lines, END)

    def close(self) -> None:
        pass


class StopSignals:
    """While active, SIGTERM and SIGINT only set ``stopped`` (the stream then ends cleanly,
    draining its work) instead of killing the worker; ``restore()`` puts the handlers back."""

    def __init__(self) -> None:
        self.stopped = False
        self._saved = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


class FollowedSource:
    """A file followed as it grows, like ``tail -f``: complete lines are returned as they are
    appended; the stream ends at a line equal to ``sentinel`` or on SIGTERM/SIGINT."""

    def __init__(self, path: str, sentinel: str | None = None) -> None:
        if not Path(path).is_file():
            raise StreamInputError(f"followed stream input {path!r}: no such file")
        self.path, self.sentinel = path, sentinel
        self._file: IO[str] = open(path, encoding="utf-8", newline="")
        self._partial = ""
        self._signals = StopSignals()

    def poll(self) -> str | Any:
        if self._signals.stopped:
            return END
        text = self._file.readline()
        if not text:
            return None
        text = self._partial + text
        if not text.endswith("\n"):  # the writer is mid-line: keep it for the next poll
            self._partial = text
            return None
        self._partial = ""
        line = text.rstrip("\r\n")
        return END if self.sentinel is not None and line == self.sentinel else line

    def close(self) -> None:
        self._file.close()
        self._signals.restore()


class StdinSource:
    """Standard input (``mpiexec`` forwards it to rank 0 only, so to a one-worker job): lines as
    they come, ending at end of input, a ``sentinel`` line or SIGTERM/SIGINT."""

    def __init__(self, sentinel: str | None = None) -> None:
        self.sentinel = sentinel
        self._file = sys.stdin
        self._signals = StopSignals()
        self._eof = False

    def poll(self) -> str | Any:
        if self._eof or self._signals.stopped:
            return END
        if not select.select([self._file], [], [], 0)[0]:
            return None
        text = self._file.readline()
        if not text:
            self._eof = True
            return END
        line = text.rstrip("\r\n")
        return END if self.sentinel is not None and line == self.sentinel else line

    def close(self) -> None:
        self._signals.restore()


def open_source(path: str, follow: bool = False, sentinel: str | None = None, passes: int = 1,
                order_by: int | None = None, shuffle: int | None = None,
                nworkers: int = 1) -> FileSource | FollowedSource | StdinSource:
    """The source a stream's settings name (``path`` ``"-"`` is standard input; ``passes``,
    ``order_by`` and ``shuffle`` apply to a finite file only, ``sentinel`` to the others).

    Raises ``StreamInputError`` for a missing file or stdin with more than one worker.
    """
    if path == STDIN:
        if nworkers != 1:
            raise StreamInputError(f"stream input '-' (stdin): mpiexec forwards stdin to rank 0 only, so "
                                   f"run it with one worker (-w 1), not {nworkers}")
        return StdinSource(sentinel)
    if follow:
        return FollowedSource(path, sentinel)
    return FileSource(os.fspath(path), passes, order_by, shuffle)
