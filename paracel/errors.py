"""Exceptions a paracel user can catch."""
from __future__ import annotations

import signal


class ParacelError(Exception):
    """Base class of every error paracel raises on purpose (``paracel.loading.LoadError`` too)."""


class ConfigError(ParacelError, ValueError):
    """A job config is invalid; the message names the file and the field."""


class ServerError(ParacelError):
    """A parameter-server request failed on the server; the message is the server's."""


class RemoteKeyError(ParacelError, KeyError):
    """A read asked for keys that no server holds; the message names them."""

    def __str__(self) -> str:  # KeyError's repr-quoting would hide the message
        return str(self.args[0]) if self.args else ""


class JobFailed(ParacelError):
    """An MPI job exited non-zero; carries its exit code and the ranks' error output."""

    def __init__(self, message: str, returncode: int, output: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


class JobInterrupted(KeyboardInterrupt):
    """The launcher got SIGTERM or SIGHUP while it waited for a job, and stopped the job's ranks
    (a ``KeyboardInterrupt``, as SIGINT gives; ``signum`` says which signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class RequestTimeout(ParacelError, TimeoutError):
    """A server sent no reply within the job's ``request_timeout``; names the rank and the operation."""


class MessageError(ParacelError, ValueError):
    """A message that cannot be decoded (not paracel's wire format, or fields that contradict
    its buffers); a server answers it with an error reply and keeps serving."""
