"""Data loading (Paracel's ``paracel_load`` family): split files by bytes on line boundaries
across the workers, parse them with numpy/Cython, shuffle records by key, build shards.

Every entry point is collective over ``comm``, the workers' communicator.
"""
from .api import load, loadall, sequential_loadall
from .builders import load_as_graph, load_as_matrix
from .errors import LineError, LoadError
from .formats import make_format
from .records import GraphShard, IdMap, Lines, LoadInfo, MatrixShard, Records, SparseRows, Table
from .shuffle import grid, owners

__all__ = ["load", "loadall", "sequential_loadall", "load_as_graph", "load_as_matrix",
           "LoadError", "LineError", "make_format", "GraphShard", "IdMap", "Lines", "LoadInfo",
           "MatrixShard", "Records", "SparseRows", "Table", "grid", "owners"]
