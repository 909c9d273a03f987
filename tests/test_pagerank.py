"""PageRank on real SNAP graphs with real ranks: equal to a scipy power iteration and to the
reference top-10 of ../shared/data/README.md, at any worker count and staleness."""
from __future__ import annotations

from pathlib import Path

import pytest

from paracel import JobFailed, launch
from tests.graphs import read_vertex_values, scipy_pagerank

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKI = DATA / "snap-wiki-vote" / "wiki-Vote.txt"
SLASHDOT = DATA / "snap-soc-slashdot0902" / "soc-Slashdot0902.txt"
#: ../shared/data/README.md, "PageRank": damping 0.85, uniform teleport and dangling mass.
TOP10 = {
    WIKI: [4037, 15, 6634, 2625, 2398, 2470, 2237, 4191, 7553, 5254],
    SLASHDOT: [2494, 398, 381, 4805, 37, 226, 5706, 4826, 219, 5057],
}


def run(tmp_path: Path, graph: Path, workers: int, staleness: int | None = 0) -> dict[int, float]:
    config = {"algorithm": "paracel.algorithms.pagerank:PageRank", "staleness": staleness,
              "output": str(tmp_path), "params": {"input": str(graph)}}
    launch(config, workers=workers, servers=2, timeout=120)
    return read_vertex_values(tmp_path, "pagerank")


@pytest.fixture(scope="module")
def wiki_reference() -> dict[int, float]:
    return scipy_pagerank(WIKI)[0]


@pytest.mark.parametrize("workers, staleness", [(1, 0), (2, 0), (4, 0), (2, 2), (3, None)])
def test_wiki_vote_equals_scipy_and_the_reference_top10(tmp_path, wiki_reference, workers, staleness):
    ranks = run(tmp_path, WIKI, workers, staleness)
    assert ranks.keys() == wiki_reference.keys() and len(ranks) == 7115
    assert sum(abs(ranks[v] - wiki_reference[v]) for v in ranks) < 1e-6
    assert sorted(ranks, key=lambda v: (-ranks[v], v))[:10] == TOP10[WIKI]
    top = [line.split("\t")[0] for line in (tmp_path / "top.txt").read_text().splitlines()]
    assert list(map(int, top)) == TOP10[WIKI]


def test_slashdot_with_self_loops_equals_scipy(tmp_path):
    ranks = run(tmp_path, SLASHDOT, workers=2)
    reference = scipy_pagerank(SLASHDOT)[0]
    assert ranks.keys() == reference.keys() and len(ranks) == 82168
    assert sum(abs(ranks[v] - reference[v]) for v in ranks) < 1e-6
    assert sorted(ranks, key=lambda v: (-ranks[v], v))[:10] == TOP10[SLASHDOT]


def test_an_empty_graph_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# no edges\n")
    with pytest.raises(JobFailed, match="the graph has no vertices"):
        run(tmp_path / "out", empty, workers=2)
