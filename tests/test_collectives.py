"""The paralg toolkit on real ranks: collectives over 1..4 workers, the ratings loaders, the
per-round log, and what a worker waiting in a collective costs (tests/collective_jobs.py)."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

from collective_jobs import ARRAY_CASES, worker_inputs
from paracel import collectives, launch

TIMEOUT = 60
# A worker waiting in a collective may use at most this share of one core (a blocking
# MPI collective spins at 1.0).
MAX_WAIT_CPU = 0.3


def write_ratings(path: Path) -> np.ndarray:
    """A small ratings file (tab-separated, some (user, item) pairs repeated); returns its rows."""
    rng = np.random.default_rng(5)
    rows = np.column_stack([rng.integers(1, 30, 300), rng.integers(0, 45, 300), rng.integers(1, 6, 300)])
    rows = np.vstack([rows, rows[:1]])
    np.savetxt(path, rows, fmt="%d", delimiter="\t")
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[list[dict], np.ndarray, Path]]:
    """For W = 1..4: every worker's results of the Reductions job, the ratings it loaded and
    its output folder."""
    out = {}
    for workers in (1, 2, 3, 4):
        folder = tmp_path_factory.mktemp(f"w{workers}")
        ratings = write_ratings(folder / "ratings.tsv")
        config = {"algorithm": "tests.collective_jobs:Reductions", "output": str(folder / "out"),
                  "params": {"ratings": str(folder / "ratings.tsv")}}
        done = launch(config, workers=workers, servers=1, timeout=TIMEOUT)
        out[workers] = ([pickle.loads((done.output_dir / f"result_{w}.pkl").read_bytes())
                         for w in range(workers)], ratings, done.output_dir)
    return out


WORKERS = [1, 2, 3, 4]


def same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("workers", WORKERS)
def test_array_reductions_are_exact_and_keep_dtype_and_shape(runs, workers):
    results, _, _ = runs[workers]
    inputs = [worker_inputs(w) for w in range(workers)]
    for name in ARRAY_CASES:
        stacked = np.stack([np.asarray(i[name]) for i in inputs])
        for op, reduce in (("sum", np.sum), ("min", np.min), ("max", np.max)):
            expected = reduce(stacked, axis=0).astype(stacked.dtype)
            for got in results:
                if name == "float32" and op == "sum":  # float32 sums round in MPI's order
                    assert got[f"{name}/{op}"].dtype == np.float32
                    np.testing.assert_allclose(got[f"{name}/{op}"], expected, rtol=1e-6)
                else:
                    same(got[f"{name}/{op}"], expected)
    for got in results:
        same(got["complex/sum"], sum(i["complex"] for i in inputs))


@pytest.mark.parametrize("workers", WORKERS)
def test_float_sums_are_the_same_bits_on_every_worker(runs, workers):
    results, _, _ = runs[workers]
    first = results[0]["noise/sum"]
    for got in results:
        assert got["noise/sum"].tobytes() == first.tobytes()
    exact = [math.fsum(col) for col in zip(*(worker_inputs(w)["noise"] for w in range(workers)))]
    np.testing.assert_allclose(first, exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("workers", WORKERS)
def test_union_allgather_and_sparse_sum(runs, workers):
    results, _, _ = runs[workers]
    inputs = [worker_inputs(w) for w in range(workers)]
    union = np.unique(np.concatenate([i["ids"].astype(np.int64) for i in inputs]))
    rows = np.concatenate([i["rows"] for i in inputs])
    matrix = sum(i["sparse"] for i in inputs).toarray()
    for got in results:
        same(got["union"], union)
        same(got["union/empty"], np.zeros(0, np.int64))
        same(got["rows"], rows)
        same(got["rows/empty"], np.zeros((0, 3)))
        assert isinstance(got["sparse"], sp.csr_matrix)
        same(got["sparse"].toarray(), matrix)


@pytest.mark.parametrize("workers", WORKERS)
def test_object_gather_bcast_allgather_and_gathered_dump(runs, workers):
    results, _, out = runs[workers]
    objects = [worker_inputs(w)["object"] for w in range(workers)]

    def equal(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    root = workers - 1
    for w, got in enumerate(results):
        if w == root:
            assert len(got["gather"]) == workers and all(map(equal, got["gather"], objects))
        else:
            assert got["gather"] is None
        assert equal(got["bcast"], objects[root])
        assert len(got["allgather"]) == workers and all(map(equal, got["allgather"], objects))
        assert got["dumped"] == (out / "gathered.txt" if w == 0 else None)
    lines = (out / "gathered.txt").read_text().splitlines()
    assert lines == [f"worker{w}\t{','.join(map(str, range(w + 1)))}" for w in range(workers)]


@pytest.mark.parametrize("workers", WORKERS)
def test_round_log_combines_each_column_by_its_rule(runs, workers):
    results, _, out = runs[workers]
    ws = range(workers)
    expected = [{"total": float(sum(w + step for w in ws)), "slowest": float(max(w * step for w in ws)),
                 "least": float(min(step - w for w in ws))} for step in range(3)]
    for got in results:
        assert got["rounds"] == expected
    logged = [json.loads(line) for line in (out / "metrics_0.jsonl").read_text().splitlines()]
    assert logged == [{"step": step, **row} for step, row in enumerate(expected)]
    assert not any(out.glob("metrics_[1-9].jsonl"))


@pytest.mark.parametrize("workers", WORKERS)
def test_ratings_loaders_shard_by_owner_with_global_shape_and_stats(runs, workers):
    results, rows, _ = runs[workers]
    shape = (int(rows[:, 0].max()) + 1, int(rows[:, 1].max()) + 1)
    stats = (len(rows), rows[:, 2].mean(), rows[:, 2].min(), rows[:, 2].max())

    def triples(r) -> list[tuple[int, int, float]]:
        return sorted(zip(r.users.tolist(), r.items.tolist(), r.values.tolist()))

    whole = sorted(map(tuple, rows.astype(float).tolist()))
    for by, column in (("user", "users"), ("item", "items")):
        parts = [got[f"ratings/{by}"] for got in results]
        assert sorted(t for p in parts for t in triples(p)) == whole  # every rating once
        owners = [set(getattr(p, column).tolist()) for p in parts]
        assert sum(map(len, owners)) == len(set().union(*owners))  # each id on one worker
        for part in parts:
            assert part.users.dtype == part.items.dtype == np.int64 and part.values.dtype == np.float64
            assert part.shape == shape and part.matrix().shape == shape
            assert (part.stats.count, part.stats.mean, part.stats.lo, part.stats.hi) == pytest.approx(stats)
    everything = results[0]["ratings/all"]
    assert triples(everything) == whole and everything.shape == shape
    user, item = rows[0, :2]
    repeats = rows[(rows[:, 0] == user) & (rows[:, 1] == item), 2]
    assert len(repeats) > 1 and everything.matrix()[user, item] == repeats.sum()


def test_collectives_reject_what_they_cannot_reduce():
    comm = MPI.COMM_SELF
    with pytest.raises(ValueError, match="op must be one of"):
        collectives.allreduce(comm, np.ones(2), "mean")
    with pytest.raises(TypeError, match="numeric"):
        collectives.allreduce(comm, np.ones(2, bool))
    with pytest.raises(TypeError, match="allreduce max needs a numeric array"):
        collectives.allreduce(comm, np.ones(2, complex), "max")
    with pytest.raises(ValueError, match="at least one dimension"):
        collectives.allgather_array(comm, 3.0)


def test_waiting_in_a_collective_uses_well_under_a_core(tmp_path):
    """Worker 1 joins each collective 0.6 s late; worker 0 must mostly sleep meanwhile."""
    config = {"algorithm": "tests.collective_jobs:WaitCost", "output": str(tmp_path), "params": {"delay": 0.6}}
    out = launch(config, workers=2, servers=1, timeout=TIMEOUT).output_dir
    cost = json.loads((out / "wait_cost.json").read_text())
    assert sorted(cost) == ["allgather_array", "allreduce", "bcast"]
    for name, spent in cost.items():
        assert spent["wall"] > 0.4, (name, spent)
        assert spent["cpu"] < MAX_WAIT_CPU * spent["wall"], (name, spent)
