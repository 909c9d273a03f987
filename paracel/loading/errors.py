"""Loading errors, and the collective check that makes every worker fail together."""
from __future__ import annotations

from mpi4py import MPI


class LoadError(ValueError):
    """Bad input: a malformed line (message names file and line), a missing path or an empty glob."""


class LineError(ValueError):
    """Raised by a user parser for the line at 0-based ``index`` of the lines it was given."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def agree(comm: MPI.Intracomm, error: BaseException | None) -> None:
    """Collective: raise on every worker if any worker failed, so none goes on with partial data.

    The failing worker re-raises its own exception; the others raise a :class:`LoadError`
    quoting the first failing rank's message (this also keeps them out of a later collective
    that the failed worker would never enter).
    """
    message = None if error is None else f"{type(error).__name__}: {error}"
    messages = comm.allgather(message)
    if error is not None:
        raise error
    for rank, msg in enumerate(messages):
        if msg is not None:
            raise LoadError(f"loading failed on worker {rank}: {msg}")
