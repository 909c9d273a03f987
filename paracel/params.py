"""Typed algorithm parameters: the annotations of a ``paralg`` constructor are its config schema.

Plain annotations (``int``, ``float``, ``str``, ``bool``, ``list[int]``, ``str | None``, ...)
fix the type; ``typing.Annotated`` adds bounds or asks that an input path exist::

    from paracel import paralg
    from paracel.params import InputPath, PositiveInt, AtLeast

    class MyAlg(paralg):
        def __init__(self, input: InputPath, rounds: PositiveInt = 10,
                     reg: Annotated[float, AtLeast(0)] = 0.1) -> None: ...

A value that breaks its annotation is a ``ConfigError`` naming ``params.NAME`` before any rank
starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class AtLeast:
    """The number must be >= ``bound``."""

    bound: float


@dataclass(frozen=True)
class Above:
    """The number must be > ``bound``."""

    bound: float


@dataclass(frozen=True)
class AtMost:
    """The number must be <= ``bound``."""

    bound: float


@dataclass(frozen=True)
class Existing:
    """The string is an input pattern (a file, a folder, a glob) that must match some file."""


PositiveInt = Annotated[int, AtLeast(1)]
NonNegativeInt = Annotated[int, AtLeast(0)]
PositiveFloat = Annotated[float, Above(0)]
NonNegativeFloat = Annotated[float, AtLeast(0)]
#: A factor in (0, 1], e.g. a learning-rate decay.
UnitInterval = Annotated[float, Above(0), AtMost(1)]
InputPath = Annotated[str, Existing()]
