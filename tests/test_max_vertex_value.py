"""Max vertex value on a real SNAP graph with real ranks: every vertex ends with the largest id
of its connected component (scipy.sparse.csgraph), at any worker count and staleness."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from paracel import launch
from paracel.algorithms.max_vertex_value import neighbour_max
from tests.graphs import read_graph, read_vertex_values

EMAIL = Path(__file__).resolve().parents[2] / "shared" / "data" / "snap-email-eu-core" / "email-Eu-core.txt"


def component_max(path: Path) -> dict[int, int]:
    """The largest vertex id of each vertex's (weakly) connected component."""
    ids, graph = read_graph(path)
    _, label = connected_components(graph, directed=True, connection="weak")
    best = np.zeros(label.max() + 1, dtype=np.int64)
    np.maximum.at(best, label, ids)
    return dict(zip(ids.tolist(), best[label].tolist()))


@pytest.mark.parametrize("workers, staleness", [(1, 0), (2, 0), (4, 2), (3, None)])
def test_every_vertex_gets_the_largest_id_of_its_component(tmp_path, workers, staleness):
    config = {"algorithm": "paracel.algorithms.max_vertex_value:MaxVertexValue", "staleness": staleness,
              "output": str(tmp_path), "params": {"input": str(EMAIL)}}
    launch(config, workers=workers, servers=2, timeout=120)
    got = read_vertex_values(tmp_path, "max_value")
    expected = component_max(EMAIL)
    assert got == expected and len(got) == 1005 and len(set(expected.values())) > 1


def test_neighbour_max_keeps_isolated_rows():
    adjacency = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=np.int8))
    assert neighbour_max(adjacency, np.array([5, 9, 2]), np.array([7, 1, 3])).tolist() == [9, 1, 3]
