"""Objects named ``"package.module:attr"``: the one way a config or a call names user code
(algorithms, update functions, parsers)."""
from __future__ import annotations

import importlib
from typing import Any, Callable

from paracel.errors import ParacelError


class NotImportable(ParacelError):
    """Nothing (of the kind wanted) is importable under ``name``; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot import {name!r}: {reason}")
        self.name, self.reason = name, reason


def is_import_name(text: Any) -> bool:
    """Whether ``text`` has the form ``"package.module:attr"``."""
    if not isinstance(text, str):
        return False
    module, sep, attr = text.partition(":")
    return bool(module and sep and attr)


def import_by_name(name: str) -> Any:
    """The attribute ``attr`` of module ``package.module``, named ``"package.module:attr"``.

    Raises :class:`NotImportable` if ``name`` has another form, the module cannot be imported
    or lacks the attribute; any other error raised while importing the module propagates.
    """
    if not is_import_name(name):
        raise NotImportable(name, "expected 'package.module:attr'")
    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NotImportable(name, str(exc)) from None


def import_function(name: str) -> Callable[..., Any]:
    """:func:`import_by_name` for a function (any callable); raises :class:`NotImportable` for
    anything else too."""
    fn = import_by_name(name)
    if not callable(fn):
        raise NotImportable(name, f"it is a {type(fn).__name__}, not a function")
    return fn
