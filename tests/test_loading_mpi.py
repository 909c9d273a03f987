"""Loading with real ranks (mpiexec): shards partition the real files, shuffles put every key on
its owner, builders see every edge, and an error on one rank stops all of them."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mpirun import SHARED_DATA, run_ranks
from paracel.loading.shuffle import grid, key_hash

JOB = str(Path(__file__).with_name("loading_job.py"))
UDATA = SHARED_DATA / "movielens-100k" / "u.data"
WIKI = SHARED_DATA / "snap-wiki-vote" / "wiki-Vote.txt"
A9A = SHARED_DATA / "a9a" / "a9a"
pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data not present")


def file_lines(path: Path) -> list[str]:
    lines = path.read_bytes().decode().split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def npz(out: Path, name: str, size: int) -> list[dict[str, np.ndarray]]:
    return [dict(np.load(out / f"{name}.{r}.npz")) for r in range(size)]


def cat(parts: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([p[key] for p in parts])


@pytest.fixture(scope="module", params=[1, 2, 3, 4])
def suite(request, tmp_path_factory) -> tuple[Path, int]:
    size = request.param
    out = tmp_path_factory.mktemp(f"suite{size}")
    proc = run_ranks(size, [JOB, "suite", str(out), str(SHARED_DATA)], timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, size


@pytest.mark.parametrize("name,path", [("udata_lines", UDATA), ("wiki_lines", WIKI),
                                       ("a9a_lines", A9A)])
def test_shards_partition_the_file(suite, name: str, path: Path) -> None:
    out, size = suite
    shards = [json.loads((out / f"{name}.{r}.json").read_text()) for r in range(size)]
    # Shards in rank order are consecutive runs of the file: disjoint, none lost, none twice.
    assert [line for s in shards for line in s] == file_lines(path)
    if size > 1:
        assert all(len(s) > 0 for s in shards)


def test_parsed_shards_union_is_the_file(suite) -> None:
    out, size = suite
    ref = np.loadtxt(UDATA, dtype=np.int64)
    ratings = npz(out, "udata", size)
    assert np.array_equal(np.c_[cat(ratings, "user"), cat(ratings, "item"), cat(ratings, "time")],
                          ref[:, [0, 1, 3]])
    edges = npz(out, "wiki", size)
    assert len(cat(edges, "src")) == 103_689
    svm = npz(out, "a9a", size)
    assert all(tuple(p["shape"]) [1] == 123 for p in svm)
    assert sum(int(p["shape"][0]) for p in svm) == 32_561
    assert sum(len(p["data"]) for p in svm) == 451_592
    assert np.array_equal(cat(svm, "y"), np.array([float(l.split()[0]) for l in file_lines(A9A)]))


@pytest.mark.parametrize("mode", ["fmap", "smap", "fsmap"])
def test_shuffle_puts_each_key_on_its_owner(suite, mode: str) -> None:
    out, size = suite
    parts = npz(out, f"udata_{mode}", size)
    ref = np.loadtxt(UDATA, dtype=np.int64)
    got = np.c_[cat(parts, "user"), cat(parts, "item"), cat(parts, "rating"), cat(parts, "time")]
    assert Counter(map(tuple, got.tolist())) == Counter(map(tuple, ref.tolist()))
    rows, cols = grid(size)
    for rank, p in enumerate(parts):
        hu, hi = key_hash(p["user"]), key_hash(p["item"])
        want = {"fmap": hu % np.uint64(size), "smap": hi % np.uint64(size),
                "fsmap": (hu % np.uint64(rows)) * np.uint64(cols) + hi % np.uint64(cols)}[mode]
        assert np.all(want == rank)
    if mode == "fmap":
        owner_of = {}
        for rank, p in enumerate(parts):
            for u in np.unique(p["user"]):
                assert owner_of.setdefault(int(u), rank) == rank
        assert len(owner_of) == 943


def test_graph_shard_holds_every_edge_once_per_side(suite) -> None:
    out, size = suite
    parts = npz(out, "graph", size)
    ref = np.array([l.split() for l in file_lines(WIKI) if not l.startswith("#")], dtype=np.int64)
    ref_set = Counter(map(tuple, ref.tolist()))
    for side in ("out", "in"):
        got = np.c_[cat(parts, f"{side}_src"), cat(parts, f"{side}_dst")]
        assert Counter(map(tuple, got.tolist())) == ref_set
    vertices = cat(parts, "vertices")
    assert len(vertices) == len(set(vertices.tolist())) == 7115
    out_deg = Counter(ref[:, 0].tolist())
    in_deg = Counter(ref[:, 1].tolist())
    for p in parts:
        assert [out_deg[v] for v in p["vertices"].tolist()] == p["out_degree"].tolist()
        assert [in_deg[v] for v in p["vertices"].tolist()] == p["in_degree"].tolist()
        assert p["totals"].tolist() == [7115, 103_689]


def test_matrix_rows_whole_and_global_columns(suite) -> None:
    out, size = suite
    parts = npz(out, "matrix", size)
    ref = np.loadtxt(UDATA, dtype=np.int64)
    got = np.c_[cat(parts, "user"), cat(parts, "item"), cat(parts, "rating").astype(np.int64)]
    assert Counter(map(tuple, got.tolist())) == Counter(map(tuple, ref[:, :3].tolist()))
    assert sum(len(p["rows"]) for p in parts) == 943
    for p in parts:
        assert np.array_equal(p["cols"], np.unique(ref[:, 1]))


def test_streaming_and_loadall_see_everything(suite) -> None:
    out, size = suite
    for r in range(size):
        seen = json.loads((out / f"stream.{r}.json").read_text())
        assert seen["records"] == seen["info_records"] == 100_000
        assert seen["blocks"] == seen["info_blocks"] >= 19
        assert seen["rating_sum"] == pytest.approx(352_986)
        assert seen["loadall_edges"] == 103_689


def test_error_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    lines = [f"{i % 50} {i % 7} {1 + i % 5}" for i in range(2000)]
    lines[1989] = "5 6 x"
    (tmp_path / "bad.txt").write_text("\n".join(lines) + "\n")
    size = 3
    proc = run_ranks(size, [JOB, "errors", str(tmp_path), str(tmp_path)], timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = [json.loads((tmp_path / f"errors.{r}.json").read_text()) for r in range(size)]
    for rank, o in enumerate(outcomes):
        for case in ("raise", "graph"):
            assert o[case]["ok"] is False and o[case]["type"] == "LoadError"
            assert "bad.txt:1990: not a number in field 3" in o[case]["message"]
            if rank != size - 1:
                assert o[case]["message"].startswith(f"loading failed on worker {size - 1}")
        assert o["missing"]["ok"] is False and "nothing-*.txt" in o["missing"]["message"]
        assert o["skip"]["ok"] and o["skip"]["skipped_total"] == 1
    assert sum(o["skip"]["n"] for o in outcomes) == 1999
    assert [o["skip"]["skipped"] for o in outcomes] == [0] * (size - 1) + [1]
