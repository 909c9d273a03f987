"""Update functions applied on the servers: ``fn(old, delta) -> new``.

Built-ins are named (``add`` is the default); a user's own is named
``"package.module:function"`` and imported by every server on first use.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from paracel.importing import NotImportable, import_function, is_import_name

UpdateFn = Callable[[Any, Any], Any]

#: Built-in update functions, as numpy ufuncs so that a batch is applied in one vector call.
BUILTIN_UFUNCS: dict[str, np.ufunc] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
}
#: ``replace`` stores the delta as the new value.
REPLACE = "replace"
BUILTIN_NAMES = frozenset([*BUILTIN_UFUNCS, REPLACE])


def _replace(old: Any, delta: Any) -> Any:
    return delta


_resolved: dict[str, UpdateFn] = {}


def resolve(name: str) -> UpdateFn:
    """The update function named ``name`` (a built-in or ``"package.module:function"``).

    Raises ``ValueError`` naming the function if it is unknown or cannot be imported.
    """
    fn = _resolved.get(name)
    if fn is not None:
        return fn
    if name in BUILTIN_UFUNCS:
        fn = BUILTIN_UFUNCS[name]
    elif name == REPLACE:
        fn = _replace
    elif is_import_name(name):
        try:
            fn = import_function(name)
        except NotImportable as exc:
            raise ValueError(f"cannot import update function {name!r}: {exc.reason}") from None
    else:
        raise ValueError(f"unknown update function {name!r}: use one of {sorted(BUILTIN_NAMES)} "
                         f"or 'package.module:function'")
    _resolved[name] = fn
    return fn
