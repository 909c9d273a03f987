"""The errors of data loading."""
from __future__ import annotations

from paracel.errors import ParacelError


class LoadError(ParacelError, ValueError):
    """Bad input: a malformed line (message names file and line), a missing path or an empty glob,
    or a parser that cannot be imported."""


class LineError(ValueError):
    """Raised by a user parser for the line at 0-based ``index`` of the lines it was given."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index

