"""Algorithms whose constructors exercise every kind of param annotation (tests/test_config.py)."""
from __future__ import annotations  # annotations as strings, as in most modules

from typing import Annotated, Literal, Optional

from paracel import paralg
from paracel.params import AtLeast, AtMost, InputPath, NonNegativeFloat, PositiveInt, UnitInterval


class Typed(paralg):
    """Every supported annotation, each with a default (a config sets only what a test needs)."""

    def __init__(self, rank: PositiveInt = 10, rate: float = 0.1, decay: UnitInterval = 0.9,
                 reg: NonNegativeFloat = 0.0, name: str = "x", verbose: bool = False,
                 mode: Literal["sparse", "dense"] = "sparse", train: InputPath | None = None,
                 ids: list[int] | None = None, weights: dict[str, float] | None = None,
                 limit: Optional[Annotated[int, AtMost(5)]] = None, choice: int | str = 0,
                 pair: tuple[int, int] = (0, 0), anything=None) -> None:
        self.params = dict(locals())
        del self.params["self"]

    def solve(self) -> None:
        """Never run: these tests stop at validation."""


class BadAnnotation(paralg):
    """An annotation that names nothing importable (the algorithm's own bug)."""

    def __init__(self, size: NoSuchType = 1) -> None:  # noqa: F821 - deliberately undefined
        self.size = size

    def solve(self) -> None:
        """Never run."""


class Misfit(paralg):
    """A bound on a string: a marker that does not fit its type (the algorithm's own bug)."""

    def __init__(self, label: Annotated[str, AtLeast(1)] = "a") -> None:
        self.label = label

    def solve(self) -> None:
        """Never run."""
