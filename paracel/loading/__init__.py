"""Data loading (Paracel's ``paracel_load`` family): split files by bytes on line boundaries
across the workers, parse them with numpy/Cython, shuffle records by key, build shards.

Every entry point is collective over ``comm``, the workers' communicator.

Names are imported on first use: the launcher checks input paths with
``paracel.loading.inputs`` before any rank starts, and must not start MPI to do so.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "load": "api", "loadall": "api", "sequential_loadall": "api",
    "load_as_graph": "builders", "load_as_matrix": "builders", "load_labeled": "builders",
    "LoadError": "errors", "LineError": "errors", "make_format": "formats",
    "GraphShard": "records", "IdMap": "records", "Lines": "records", "LoadInfo": "records",
    "MatrixShard": "records", "Records": "records", "SparseRows": "records", "Table": "records",
    "Text": "records",
    "grid": "shuffle", "owners": "shuffle",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
