"""Exceptions a paracel user can catch."""
from __future__ import annotations


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
