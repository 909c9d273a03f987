"""Typed algorithm parameters: the annotations of a ``paralg`` constructor are its config schema.

Plain annotations fix the type; ``typing.Annotated`` adds bounds or asks that an input exist::

    from typing import Annotated, Literal

    from paracel import paralg
    from paracel.params import AtLeast, InputPath, PositiveInt

    class MyAlg(paralg):
        def __init__(self, input: InputPath, rounds: PositiveInt = 10,
                     reg: Annotated[float, AtLeast(0)] = 0.1,
                     mode: Literal["sparse", "dense"] = "sparse") -> None: ...

What each annotation accepts (values are decoded JSON):

- ``int``: an integer (``true`` is not one); ``float``: a number, an integer becoming a float;
  ``str``, ``bool``: exactly that; ``None``: null; no annotation or ``Any``: anything.
- ``list[T]`` / ``dict[K, V]``: a list / an object whose items are checked (``list`` alone: any
  items); ``Literal[a, b]``: one of those values; ``X | Y`` / ``Optional[X]``: the first member
  that accepts the value; any other class (or generic, as ``tuple[int, int]``): an instance
  of it, its items unchecked. A bad item is named by its place (``ids[2]``, ``weights.a``).
- ``Annotated[T, marker, ...]``: ``T``, then every :class:`Constraint` marker (other metadata
  is ignored). Markers let ``None`` through: ``Annotated[int | None, AtLeast(1)]`` is
  ``PositiveInt | None``.

:func:`conform` applies an annotation; a value that breaks it raises :class:`Mismatch`, which
the config loader turns into a ``ConfigError`` naming ``params.NAME`` before any rank starts.
"""
from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Annotated, Any, Callable, ClassVar, Literal, Union, get_args, get_origin

from paracel.errors import ParacelError
from paracel.loading.errors import LoadError
from paracel.loading.inputs import resolve

_SHOWN = 60  # longest value repr quoted in a message


class Constraint(ABC):
    """A marker for ``Annotated`` that checks a value already of the annotated type."""

    @abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether ``value`` meets the constraint."""

    @abstractmethod
    def __str__(self) -> str:
        """What the marker asks, as it reads after the type name (``int >= 1``)."""


@dataclass(frozen=True)
class Bound(Constraint):
    """A comparison with ``bound``; the subclasses below name which."""

    bound: float
    symbol: ClassVar[str]
    compare: ClassVar[Callable[[Any, Any], bool]]

    def accepts(self, value: Any) -> bool:
        return self.compare(value, self.bound)

    def __str__(self) -> str:
        return f"{self.symbol} {self.bound:g}"


class AtLeast(Bound):
    """The number must be >= ``bound``."""

    symbol, compare = ">=", operator.ge


class Above(Bound):
    """The number must be > ``bound``."""

    symbol, compare = ">", operator.gt


class AtMost(Bound):
    """The number must be <= ``bound``."""

    symbol, compare = "<=", operator.le


@dataclass(frozen=True)
class Existing(Constraint):
    """The input pattern (a file, a folder, a glob, or a list of them) must match some file,
    by the rule of ``paracel_load`` and relative to the current folder."""

    def accepts(self, value: Any) -> bool:
        try:
            resolve(value)
        except LoadError:
            return False
        return True

    def __str__(self) -> str:
        return "naming existing files"


PositiveInt = Annotated[int, AtLeast(1)]
NonNegativeInt = Annotated[int, AtLeast(0)]
PositiveFloat = Annotated[float, Above(0)]
NonNegativeFloat = Annotated[float, AtLeast(0)]
#: A factor in (0, 1], e.g. a learning-rate decay.
UnitInterval = Annotated[float, Above(0), AtMost(1)]
InputPath = Annotated[str, Existing()]


class Mismatch(ParacelError, ValueError):
    """A value that breaks its annotation: ``expected`` (as :func:`describe` says it), the
    ``value`` at fault, and ``path``, where it sits in the parameter (``""`` for the parameter
    itself, ``"[2]"`` for a list item, ``".name"`` for a dict item)."""

    def __init__(self, expected: str, value: Any, path: str = "") -> None:
        shown = repr(value)
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN - 3] + "..."
        super().__init__(f"must be {expected}, got {shown}")
        self.expected, self.value, self.path = expected, value, path

    def inside(self, step: str) -> Mismatch:
        """The same mismatch seen from the container holding it at ``step``."""
        return Mismatch(self.expected, self.value, step + self.path)


def conform(value: Any, annotation: Any) -> Any:
    """``value`` as a parameter annotated ``annotation`` takes it (see the module docstring).

    Raises :class:`Mismatch` if the value breaks the annotation, ``TypeError`` if the
    annotation is not one this module knows (or a marker does not fit its type).
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return value
    if origin is Annotated:
        try:
            conformed = conform(value, args[0])
            if conformed is None or all(m.accepts(conformed) for m in _constraints(args)):
                return conformed
        except Mismatch as exc:
            if exc.path:  # a bad item inside a list or dict: name the item, not the whole
                raise
        raise Mismatch(describe(annotation), value)
    if origin is Literal:
        if any(type(value) is type(choice) and value == choice for choice in args):
            return value
        raise Mismatch(describe(annotation), value)
    if origin is Union or origin is UnionType:
        inner = None
        for member in args:
            try:
                return conform(value, member)
            except Mismatch as exc:
                inner = inner or (exc if exc.path else None)
        # a member that took the container but not one of its items says the most
        raise inner or Mismatch(describe(annotation), value)
    if annotation is None or annotation is NoneType:
        if value is None:
            return value
    elif annotation is float:
        if type(value) in (float, int):  # type(), not isinstance: a bool is not a number here
            return float(value)
    elif annotation is int:
        if type(value) is int:
            return value
    elif origin is list or annotation is list:
        if isinstance(value, list):
            item = args[0] if args else Any
            return [_conform_at(f"[{i}]", v, item) for i, v in enumerate(value)]
    elif origin is dict or annotation is dict:
        if isinstance(value, dict):
            key, item = args if args else (Any, Any)
            return {_conform_at(f".{k}", k, key): _conform_at(f".{k}", v, item)
                    for k, v in value.items()}
    elif isinstance(origin or annotation, type):  # a class, or a generic such as tuple[int, int]
        if isinstance(value, origin or annotation):
            return value
    else:
        raise TypeError(f"unsupported parameter annotation {annotation!r}")
    raise Mismatch(describe(annotation), value)


def _conform_at(step: str, value: Any, annotation: Any) -> Any:
    try:
        return conform(value, annotation)
    except Mismatch as exc:
        raise exc.inside(step) from None


def _constraints(annotated_args: tuple) -> list[Constraint]:
    return [m for m in annotated_args[1:] if isinstance(m, Constraint)]


def describe(annotation: Any) -> str:
    """The annotation as messages name it: ``int >= 1``, ``list[str]``, ``one of 'a', 'b'``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return "anything"
    if annotation is None or annotation is NoneType:
        return "None"
    if origin is Annotated:
        wants = " and ".join(map(str, _constraints(args)))
        return f"{describe(args[0])} {wants}".rstrip()
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is Union or origin is UnionType:
        return " or ".join(map(describe, args))
    if origin in (list, dict) and args:
        return f"{origin.__name__}[{', '.join(map(describe, args))}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")
